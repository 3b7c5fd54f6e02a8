#!/bin/sh
# Install the system packages some tests need, if they are missing. Idempotent and quiet.
#
#   go + github.com/rabbitmq/amqp091-go (Debian: golang-go golang-github-rabbitmq-amqp091-go-dev)
#     for tests/test_go_tutorial.py (a non-Python AMQP client) and bench/ (amqpperf).
#
# Does nothing when they are present; without apt-get it says so and exits 0 (the Go test then skips).
# Runs `apt-get update` only when installing from the current package lists fails.
set -eu

GOCODE=${GOCODE:-/usr/share/gocode}
PKGS="golang-go golang-github-rabbitmq-amqp091-go-dev"

have_deps() {
    command -v go >/dev/null 2>&1 && [ -d "$GOCODE/src/github.com/rabbitmq/amqp091-go" ]
}

if have_deps; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-system-deps: go/amqp091-go missing and no apt-get; Go tests will be skipped" >&2
    exit 0
fi

SUDO=
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO="sudo -n"
    else
        echo "install-system-deps: need root (or passwordless sudo) to apt-get install $PKGS" >&2
        exit 1
    fi
fi

export DEBIAN_FRONTEND=noninteractive
apt_install() {
    # shellcheck disable=SC2086
    $SUDO apt-get install -y -qq --no-install-recommends $PKGS >/dev/null
}

echo "install-system-deps: apt-get install $PKGS" >&2
if ! apt_install 2>/dev/null; then
    $SUDO apt-get update -qq >/dev/null
    apt_install
fi
have_deps || { echo "install-system-deps: installed, but go or amqp091-go still not found" >&2; exit 1; }
