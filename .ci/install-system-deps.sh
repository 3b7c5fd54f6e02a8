#!/bin/sh
# Install the system packages some tests need, if they are missing. Idempotent and quiet.
#
#   go + github.com/rabbitmq/amqp091-go (Debian: golang-go golang-github-rabbitmq-amqp091-go-dev)
#     for tests/test_go_tutorial.py (a non-Python AMQP client) and bench/ (amqpperf).
#   rabbitmqadmin (Debian: rabbitmq-server, which ships it as /usr/bin/rabbitmqadmin)
#     for tests/management_e2e/test_rabbitmqadmin.py, tests/migration and bench/ (a private RabbitMQ node).
#     Installing it must not start a node: a policy-rc.d that refuses every service start is in
#     place while apt-get runs (and removed afterwards, unless one was there already).
#
# Does nothing when they are present; without apt-get it says so and exits 0 (those tests then skip).
# Runs `apt-get update` only when installing from the current package lists fails.
set -eu

GOCODE=${GOCODE:-/usr/share/gocode}
PKGS=""

have_go() {
    command -v go >/dev/null 2>&1 && [ -d "$GOCODE/src/github.com/rabbitmq/amqp091-go" ]
}

have_rabbitmqadmin() {
    command -v rabbitmqadmin >/dev/null 2>&1 || [ -x /usr/bin/rabbitmqadmin ] || [ -x /usr/sbin/rabbitmqadmin ]
}

have_go || PKGS="$PKGS golang-go golang-github-rabbitmq-amqp091-go-dev"
have_rabbitmqadmin || PKGS="$PKGS rabbitmq-server"
if [ -z "$PKGS" ]; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-system-deps:$PKGS missing and no apt-get; the tests needing them will be skipped" >&2
    exit 0
fi

SUDO=
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO="sudo -n"
    else
        echo "install-system-deps: need root (or passwordless sudo) to apt-get install$PKGS" >&2
        exit 1
    fi
fi

# No service may start while packages install (rabbitmq-server's postinst would start a node on
# port 5672): invoke-rc.d and deb-systemd-invoke consult policy-rc.d, exit code 101 = "not allowed".
POLICY=/usr/sbin/policy-rc.d
OWN_POLICY=
if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$POLICY" >/dev/null
    $SUDO chmod 755 "$POLICY"
    OWN_POLICY=1
fi
cleanup() {
    if [ -n "$OWN_POLICY" ]; then
        $SUDO rm -f "$POLICY"
    fi
}
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive RUNLEVEL=1
apt_install() {
    # shellcheck disable=SC2086
    $SUDO env RUNLEVEL=1 apt-get install -y -qq --no-install-recommends $PKGS >/dev/null
}

echo "install-system-deps: apt-get install$PKGS" >&2
if ! apt_install 2>/dev/null; then
    $SUDO apt-get update -qq >/dev/null
    apt_install
fi
have_go || { echo "install-system-deps: installed, but go or amqp091-go still not found" >&2; exit 1; }
have_rabbitmqadmin || { echo "install-system-deps: installed, but rabbitmqadmin still not found" >&2; exit 1; }
