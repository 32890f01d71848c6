#!/usr/bin/env bash
# Builds (once) promtool of Prometheus 3.16 and prints its path: .ci/build-prometheus.sh says how and why.
# `--cached`: exit 0 when it is built, 1 when a run would build.
PROMETHEUS_PROGRAM=promtool exec "$(dirname "$0")/build-prometheus.sh" "$@"
