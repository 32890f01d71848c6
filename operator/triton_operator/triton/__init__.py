"""Talking to Triton servers: health, repository API and metrics. Free of kopf and kubernetes."""
