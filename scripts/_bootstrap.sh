# Shared set-up for scripts/test.sh and scripts/demo.sh (sourced, not executed).
#
# On a fresh Debian/Ubuntu machine with Python >= 3.11 it makes sure that:
#   1. a Python >= 3.11 with the venv module is there,
#   2. the Mosquitto and InfluxDB servers are installed (Debian packages `mosquitto` and
#      `influxdb`; installed with apt-get when missing and running as root, otherwise it
#      stops and names the packages). Their system services are left alone: the tests
#      start their own instances on free loopback ports.
#   3. carewatch's own virtualenv exists (.venv in the repository, or $CAREWATCH_VENV)
#      with `-e .[all]` and the `dev` dependency group installed. The install is skipped
#      when pyproject.toml has not changed since the last one (a stamp in the venv).
#
# Environment: CAREWATCH_VENV (virtualenv path), CAREWATCH_PYTHON (interpreter to use),
# CAREWATCH_REINSTALL=1 (ignore the stamp).

CAREWATCH_REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CAREWATCH_VENV="${CAREWATCH_VENV:-$CAREWATCH_REPO/.venv}"
export CAREWATCH_REPO CAREWATCH_VENV

cw_say() { printf 'carewatch: %s\n' "$*" >&2; }
cw_die() { printf 'carewatch: error: %s\n' "$*" >&2; exit 1; }

cw_is_root() { [ "$(id -u)" = 0 ]; }

cw_apt_install() {
    # Only ever called as root; never stops or reconfigures a running service. Returns
    # non-zero when apt fails: the caller says what that means.
    cw_say "installing Debian packages: $*"
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@"
}

# Pick an interpreter >= 3.11: $CAREWATCH_PYTHON, else python3, else python3.13..3.11.
cw_find_python() {
    local candidate
    for candidate in ${CAREWATCH_PYTHON:-} python3 python3.14 python3.13 python3.12 python3.11; do
        if command -v "$candidate" >/dev/null 2>&1 \
            && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            CAREWATCH_PY="$(command -v "$candidate")"
            return 0
        fi
    done
    local found="none"
    command -v python3 >/dev/null 2>&1 && found="$(python3 -V 2>&1)"
    cw_die "carewatch needs Python >= 3.11 (found: $found). Install python3 >= 3.11 or set CAREWATCH_PYTHON."
}

# Mosquitto installs into /usr/sbin, which is not on every user's PATH.
cw_have() {
    command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/bin/$1" ]
}

# cw_ensure_servers [optional-influxdb]: the tests need both servers; the demo runs
# without InfluxDB (no telemetry) when it is missing and cannot be installed.
cw_ensure_servers() {
    local influx_optional="${1:-}" missing=()
    cw_have mosquitto || missing+=(mosquitto)
    cw_have influxd || missing+=(influxdb)
    [ "${#missing[@]}" -eq 0 ] && return 0
    if cw_is_root; then
        cw_apt_install "${missing[@]}" || cw_die "apt-get install ${missing[*]} failed"
        cw_have mosquitto || cw_die "mosquitto is still missing after installing the package"
        cw_have influxd || cw_die "influxd is still missing after installing the package"
    elif [ -n "$influx_optional" ] && cw_have mosquitto; then
        cw_say "InfluxDB is not installed (Debian package influxdb): running without telemetry"
    else
        cw_die "missing Debian package(s): ${missing[*]}. Install them with
    sudo apt-get install -y ${missing[*]}
or run this script as root, which installs them."
    fi
}

cw_venv_ok() {
    [ -x "$CAREWATCH_VENV/bin/python" ] && "$CAREWATCH_VENV/bin/python" -c 'import sys' 2>/dev/null
}

cw_ensure_venv() {
    if ! cw_venv_ok; then
        cw_say "creating virtualenv $CAREWATCH_VENV"
        if ! "$CAREWATCH_PY" -m venv "$CAREWATCH_VENV" 2>/dev/null; then
            # Debian splits the venv module (and ensurepip) into python3-venv.
            rm -rf "$CAREWATCH_VENV"
            local ver pkgs
            ver="$("$CAREWATCH_PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
            pkgs="python3-venv python${ver}-venv"
            if cw_is_root && command -v apt-get >/dev/null 2>&1; then
                # shellcheck disable=SC2086
                cw_apt_install $pkgs || cw_say "could not install $pkgs; trying anyway"
                "$CAREWATCH_PY" -m venv "$CAREWATCH_VENV" \
                    || cw_die "could not create a virtualenv with $CAREWATCH_PY: install python3-venv"
            else
                cw_die "could not create a virtualenv with $CAREWATCH_PY: install the Debian package python3-venv (or python${ver}-venv)"
            fi
        fi
    fi

    local stamp="$CAREWATCH_VENV/.carewatch-install-stamp" want
    # The stamp covers what decides the installed set: the project metadata and the
    # interpreter the venv runs on.
    want="$( { cat "$CAREWATCH_REPO/pyproject.toml"; "$CAREWATCH_VENV/bin/python" -V; } \
        | sha256sum | cut -d' ' -f1)"
    if [ "${CAREWATCH_REINSTALL:-0}" != 1 ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        return 0
    fi
    local log="$CAREWATCH_VENV/.carewatch-install.log"
    cw_say "installing carewatch[all] and the dev tools into $CAREWATCH_VENV (log: $log)"
    rm -f "$stamp"
    # Build back-ends are chatty even with -q: keep their output in the log and show it
    # only when the install fails. `pip install --group` needs pip >= 25.1.
    if ! { "$CAREWATCH_VENV/bin/python" -m pip install -q --upgrade 'pip>=25.1' \
        && "$CAREWATCH_VENV/bin/python" -m pip install -q \
            -e "$CAREWATCH_REPO[all]" --group "$CAREWATCH_REPO/pyproject.toml:dev"; } >"$log" 2>&1
    then
        tail -n 40 "$log" >&2
        cw_die "pip install into $CAREWATCH_VENV failed (full log: $log)"
    fi
    printf '%s\n' "$want" >"$stamp"
}

# Everything both scripts need, in order. cw_bootstrap optional-influxdb: see above.
cw_bootstrap() {
    cw_find_python
    cw_ensure_servers "${1:-}"
    cw_ensure_venv
}
