#!/usr/bin/env bash
# Run carewatch's whole test suite on this machine: ./scripts/test.sh [pytest args]
#
# Sets everything up first (see scripts/_bootstrap.sh): Python >= 3.11, the Debian
# packages mosquitto and influxdb, and the virtualenv. Then runs ruff, mypy and pytest
# (integration tests included: they start their own Mosquitto and InfluxDB on free
# loopback ports, never the system services). Extra arguments go to pytest. All checks
# run even when an earlier one fails; the exit status is non-zero when any failed.
#
# CAREWATCH_SKIP_LINT=1 skips ruff and mypy (quicker while iterating on a test).
set -euo pipefail

# shellcheck source=scripts/_bootstrap.sh
source "$(dirname "${BASH_SOURCE[0]}")/_bootstrap.sh"
cw_bootstrap
cd "$CAREWATCH_REPO"

bin="$CAREWATCH_VENV/bin"
failed=()

run() {
    local name="$1"
    shift
    cw_say "running $name"
    if ! "$@"; then
        failed+=("$name")
    fi
}

if [ "${CAREWATCH_SKIP_LINT:-0}" != 1 ]; then
    run "ruff check" "$bin/ruff" check .
    run "ruff format --check" "$bin/ruff" format --check .
    run "mypy" "$bin/mypy"
fi
run "pytest" "$bin/pytest" "$@"

if [ "${#failed[@]}" -ne 0 ]; then
    cw_say "FAILED: ${failed[*]}"
    exit 1
fi
cw_say "all checks passed"
