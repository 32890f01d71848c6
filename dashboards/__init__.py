"""Grafana dashboards as code (Grafana's grafana-foundation-sdk); the chart ships the JSON they make."""
