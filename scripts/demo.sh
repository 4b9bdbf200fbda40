#!/usr/bin/env bash
# Run the carewatch demo on this machine: ./scripts/demo.sh [demo options]
#
# Sets everything up first (see scripts/_bootstrap.sh): Python >= 3.11, the Debian
# packages mosquitto and influxdb (the demo runs without InfluxDB when it is missing and
# this is not root), and the virtualenv; then runs `carewatch demo`.
set -euo pipefail

# shellcheck source=scripts/_bootstrap.sh
source "$(dirname "${BASH_SOURCE[0]}")/_bootstrap.sh"
cw_bootstrap optional-influxdb
cd "$CAREWATCH_REPO"
exec "$CAREWATCH_VENV/bin/carewatch" demo "$@"
