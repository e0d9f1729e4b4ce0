#!/usr/bin/env bash
# Install what Warren's tests, benchmarks, linters and `make demo` need:
#   - RabbitMQ from Debian (the tests run private throwaway nodes of it: warren.testing.broker),
#   - PostgreSQL from Debian (the shop's store tests run private throwaway clusters of it:
#     warren_shop.local.LocalPostgres; the system cluster is never started),
#   - Chromium from Debian (the dashboard's browser test drives it with Playwright; Playwright's own
#     browser download is never used),
#   - uv (pinned: UV_VERSION below), which reads the lock file,
#   - every Python dependency at the version uv.lock pins, each checked against the lock's hashes
#     (all extras and the `dev` dependency group: test, lint, bench), into PYTHON's environment,
#   - the warren package itself, editable and without dependencies (its console scripts and
#     `warren.pools` entry points are registered; the source is imported from src/ and operator/).
# Fails, before installing anything from the lock, if uv.lock is out of date with pyproject.toml:
# `make lock` re-locks.
# Idempotent, and quick (a few seconds) when everything is already installed. Run from anywhere.
#
#   scripts/install-deps.sh          all of the above
#   scripts/install-deps.sh uv       only uv (what `make lock` needs)
#
# Environment: PYTHON, the interpreter to install into (python3).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-python3}"
# Keep it the version images/python/Dockerfile installs (ARG UV_VERSION; tests/images checks it).
UV_VERSION=0.13.9

say() { echo "install-deps: $*"; }
pip_install() {
    "$PYTHON" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore "$@"
}

ensure_uv() {
    if [[ "$("$PYTHON" -m uv --version 2>/dev/null)" == "uv $UV_VERSION"* ]]; then
        return
    fi
    say "installing uv $UV_VERSION"
    pip_install "uv==$UV_VERSION"
}

if [[ "${1:-}" == uv ]]; then
    ensure_uv
    exit 0
elif [[ $# -gt 0 ]]; then
    echo "usage: scripts/install-deps.sh [uv]" >&2
    exit 2
fi

rabbitmq_installed() {
    [[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ]] || command -v rabbitmq-server >/dev/null 2>&1
}
postgresql_installed() {
    compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null && compgen -G '/usr/lib/postgresql/*/bin/pg_ctl' >/dev/null
}

missing=()
rabbitmq_installed && say "rabbitmq-server already installed" || missing+=(rabbitmq-server)
postgresql_installed && say "postgresql already installed" || missing+=(postgresql)
if [[ ${#missing[@]} -gt 0 ]]; then
    if [[ $EUID -ne 0 ]]; then
        echo "install-deps: ${missing[*]} missing; run this script as root to apt-get install it" >&2
        exit 1
    fi
    # We never want Debian's system services (RabbitMQ's rabbit@$(hostname) on 5672, PostgreSQL's
    # 15/main cluster on 5432): the tests start their own. Forbid service starts during the
    # install unless a policy already decides.
    added_policy=""
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        added_policy=1
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y "${missing[@]}"
    if [[ -n "$added_policy" ]]; then
        rm -f /usr/sbin/policy-rc.d
        trap - EXIT
    fi
    rabbitmq_installed || { echo "install-deps: rabbitmq-server still missing after apt-get" >&2; exit 1; }
    postgresql_installed || { echo "install-deps: postgresql still missing after apt-get" >&2; exit 1; }
    if pgrep -u rabbitmq -f beam.smp >/dev/null 2>&1; then
        # Harmless: private nodes use other names and free ports; they only share epmd.
        say "note: a system RabbitMQ node is running (left alone)"
    fi
fi

if command -v chromium >/dev/null 2>&1; then
    say "chromium already installed"
else
    if [[ $EUID -ne 0 ]]; then
        echo "install-deps: chromium is missing; run this script as root to apt-get install it" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y chromium
    command -v chromium >/dev/null 2>&1 || { echo "install-deps: chromium still missing after apt-get" >&2; exit 1; }
fi

ensure_uv
interpreter="$("$PYTHON" -c 'import sys; print(sys.executable)')"
uv=("$PYTHON" -m uv)
export UV_PYTHON_DOWNLOADS=never  # use PYTHON, never fetch an interpreter

# A pyproject.toml changed without `make lock` must not go unnoticed (in CI either). Offline when
# the lock is current; when it is not, uv resolves again to show what changed.
if ! "${uv[@]}" --quiet lock --check --python "$interpreter"; then
    echo "install-deps: uv.lock is out of date with pyproject.toml: run \`make lock\` and commit uv.lock" >&2
    exit 1
fi

requirements="$(mktemp /tmp/warren-requirements.XXXXXX.txt)"
trap 'rm -f "$requirements"' EXIT
# pip reads no lock file: uv writes the lock's pins for this project, with their hashes.
"${uv[@]}" --quiet export --frozen --all-extras --group dev --no-emit-project --format requirements-txt \
    --python "$interpreter" --output-file "$requirements"
# Quick path: uv tells in a fraction of a second whether the environment already matches the lock.
# Otherwise pip installs what differs, refusing any file whose hash the lock does not list.
if "${uv[@]}" pip install --dry-run --system --python "$interpreter" --require-hashes \
        --requirements "$requirements" 2>&1 | grep -q "Would make no changes"; then
    say "Python dependencies already match uv.lock"
else
    say "installing the Python dependencies uv.lock pins (with hashes)"
    pip_install --require-hashes --requirement "$requirements"
fi

# The package itself: reinstalled (editable, no dependencies) only if it is missing, installed from
# elsewhere or not editable, older than pyproject.toml (its entry points, scripts, metadata), of
# another version, or if a top-level package under src/ or operator/ does not import from here.
editable_is_current() {
    "$PYTHON" -P - <<'EOF'
import importlib.metadata as metadata
import importlib.util
import json
import pathlib
import re
import sys

root = pathlib.Path.cwd().resolve()
try:
    dist = metadata.distribution("warren")
except metadata.PackageNotFoundError:
    sys.exit(1)
direct = json.loads(dist.read_text("direct_url.json") or "{}")
if not direct.get("dir_info", {}).get("editable") or direct.get("url") != root.as_uri():
    sys.exit(1)
installed = getattr(dist, "_path", None)
if installed is None or (pathlib.Path(installed) / "METADATA").stat().st_mtime < (root / "pyproject.toml").stat().st_mtime:
    sys.exit(1)
version = re.search(r'^__version__ = "([^"]+)"', (root / "src/warren/__init__.py").read_text(), re.M)
if version is None or version[1] != dist.version:
    sys.exit(1)
for init in [*root.glob("src/*/__init__.py"), *root.glob("operator/*/__init__.py")]:
    spec = importlib.util.find_spec(init.parent.name)
    if spec is None or spec.origin is None or pathlib.Path(spec.origin).resolve() != init.resolve():
        sys.exit(1)
EOF
}
if editable_is_current; then
    say "warren already installed (editable, from $PWD)"
else
    say "installing warren (editable, no dependencies)"
    pip_install --no-deps --editable .
fi
say "done ($("$PYTHON" -c 'import pika, warren; print("warren", warren.__version__, "importable, pika", pika.__version__)'))"
