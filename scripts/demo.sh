#!/usr/bin/env bash
# Run `telltale demo` on the embedded default (no Kafka, no InfluxDB), installing what it needs.
set -euo pipefail
source "$(dirname "$0")/venv.sh" ui   # ui: aiohttp, for `telltale demo --ui`
exec telltale demo "$@"
