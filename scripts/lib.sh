# shellcheck shell=bash
# Shared by scripts/demo, scripts/test and scripts/setup. Sourced, never run.
#
# Everything here is idempotent: a second run finds the packages, the venv and
# a matching dependency stamp, and costs well under a second.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "root or sudo is needed to run: $*"
    fi
}

_apt_updated=""
apt_install() {
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found: install $* with your system's package manager"
    if [ -z "$_apt_updated" ]; then
        log "apt-get update"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        _apt_updated=1
    fi
    log "apt-get install $*"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

# Install the Debian packages among "$@" that are not installed yet.
ensure_debs() {
    local missing=() pkg
    command -v dpkg-query >/dev/null 2>&1 || { log "not Debian: make sure these are installed: $*"; return 0; }
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        apt_install "${missing[@]}"
    fi
}

ensure_python() {
    command -v "$PYTHON" >/dev/null 2>&1 || apt_install python3
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
        || die "$PYTHON is $("$PYTHON" -V 2>&1); Python 3.11 or newer is needed (set PYTHON=python3.x)"
    # Debian ships venv and ensurepip separately (python3.X-venv); without them
    # `python3 -m venv` leaves a venv with no pip.
    if ! "$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1; then
        apt_install "python$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')-venv"
    fi
}

_venv_ok() {
    [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null
}

# ensure_venv [EXTRA]: the venv exists and holds pyproject's dependencies (plus EXTRA's).
# A stamp holding the hash of pyproject.toml skips pip when nothing changed.
ensure_venv() {
    local extra="${1:-}" want stamp
    if ! _venv_ok; then
        ensure_python
        log "creating $VENV"
        # --clear: a venv copied from another machine has dangling interpreter links.
        "$PYTHON" -m venv --clear "$VENV"
    fi
    want="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)"
    stamp="$VENV/.deps-${extra:-base}.sha256"
    # The test extra is a superset of the base dependencies.
    if [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] \
        || { [ -z "$extra" ] && [ "$(cat "$VENV/.deps-test.sha256" 2>/dev/null)" = "$want" ]; }; then
        return 0
    fi
    log "installing Python dependencies from pyproject.toml${extra:+ (with [$extra])}"
    "$VENV/bin/python" "$ROOT/scripts/deps.py" ${extra:+"$extra"} >"$VENV/.requirements.txt"
    "$VENV/bin/python" -m pip install --quiet -r "$VENV/.requirements.txt"
    printf '%s\n' "$want" >"$stamp"
}

# Browser tests drive Debian's chromium through Playwright (never `playwright install`,
# which downloads a browser build); fonts make screenshots readable and stable.
ensure_test_system_packages() {
    if [ ! -x /usr/bin/chromium ]; then
        apt_install chromium
    fi
    ensure_debs fonts-liberation fonts-dejavu-core
    # tests/telehealth/test_proxy.py makes a self-signed certificate with openssl.
    ensure_debs openssl
    # The multi-process tests start a private redis-server of their own (to restart it safely).
    command -v redis-server >/dev/null 2>&1 || apt_install redis-server
    # tests/telehealth/test_serve.py reads the listening socket's backlog with ss.
    command -v ss >/dev/null 2>&1 || apt_install iproute2
    # The media tests (tests/media/) start their own Janus and coturn from generated configs.
    # Debian's packages also install services: where systemd runs, they would start with the
    # stock configs (Janus's APIs on every interface), so they are stopped and disabled.
    [ -x /usr/bin/janus ] || { apt_install janus && disable_system_service janus; }
    [ -x /usr/bin/turnserver ] || { apt_install coturn && disable_system_service coturn; }
    ensure_nginx
}

# The proxy tests and bench/'s proxy1 and routed2 run their own nginx with telehealth/proxy.py's
# configuration. Without systemd, Debian's package may have started its stock server on port 80:
# it is stopped.
ensure_nginx() {
    [ -x /usr/sbin/nginx ] && return 0
    apt_install nginx && disable_system_service nginx
    if [ -s /run/nginx.pid ]; then as_root /usr/sbin/nginx -s quit || true; fi
}

disable_system_service() {
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
        log "stopping and disabling the system's $1 service (the tests run their own)"
        as_root systemctl disable --now "$1" >/dev/null 2>&1 || true
    fi
}
