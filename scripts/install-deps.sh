#!/usr/bin/env bash
# Install what Warren's tests, benchmarks and `make demo` need:
#   - RabbitMQ from Debian (the tests run private throwaway nodes of it: warren.localbroker),
#   - the warren package itself, editable, with its test and bench extras.
# Idempotent, and quick when everything is already installed. Run from anywhere.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-python3}"

rabbitmq_installed() {
    [[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ]] || command -v rabbitmq-server >/dev/null 2>&1
}

if rabbitmq_installed; then
    echo "install-deps: rabbitmq-server already installed"
else
    if [[ $EUID -ne 0 ]]; then
        echo "install-deps: rabbitmq-server is missing; run this script as root to apt-get install it" >&2
        exit 1
    fi
    # We never want Debian's system node (rabbit@$(hostname), ports 5672/25672): the tests start
    # their own. Forbid service starts during the install unless a policy already decides.
    added_policy=""
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        added_policy=1
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y rabbitmq-server
    if [[ -n "$added_policy" ]]; then
        rm -f /usr/sbin/policy-rc.d
        trap - EXIT
    fi
    rabbitmq_installed || { echo "install-deps: rabbitmq-server still missing after apt-get" >&2; exit 1; }
    if pgrep -u rabbitmq -f beam.smp >/dev/null 2>&1; then
        # Harmless: private nodes use other names and free ports; they only share epmd.
        echo "install-deps: note: a system RabbitMQ node is running (left alone)"
    fi
fi

"$PYTHON" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore -e '.[test,bench]'
echo "install-deps: done ($("$PYTHON" -c 'import pika, warren; print("warren importable, pika", pika.__version__)'))"
