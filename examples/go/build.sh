#!/bin/sh
# Build the Go Work Queues tutorial programs (new_task, worker) with Debian's
# Go packages, offline, in GOPATH mode:
#
#   apt-get install golang-go golang-github-rabbitmq-amqp091-go-dev
#   examples/go/build.sh OUTDIR        # -> OUTDIR/new_task, OUTDIR/worker
#
# The amqp091-go library is taken from /usr/share/gocode (override with
# GOCODE=DIR, e.g. a GOPATH where `go get` put github.com/rabbitmq/amqp091-go).
set -eu

if [ $# -ne 1 ]; then
    echo "usage: $0 OUTDIR" >&2
    exit 2
fi
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$1"
out=$(cd "$1" && pwd)
gocode=${GOCODE:-/usr/share/gocode}

command -v go >/dev/null 2>&1 || { echo "go not found: apt-get install golang-go golang-github-rabbitmq-amqp091-go-dev" >&2; exit 1; }
if [ ! -d "$gocode/src/github.com/rabbitmq/amqp091-go" ]; then
    echo "github.com/rabbitmq/amqp091-go not found under $gocode/src: apt-get install golang-github-rabbitmq-amqp091-go-dev" >&2
    exit 1
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM
# go needs a writable build cache; fall back to a temporary one if $HOME has none.
if [ -z "${GOCACHE:-}" ]; then
    cache=$(GO111MODULE=off go env GOCACHE 2>/dev/null || true)
    if [ -z "$cache" ] || ! mkdir -p "$cache" 2>/dev/null || [ ! -w "$cache" ]; then
        export GOCACHE="$tmp/cache"
    fi
fi

for prog in new_task worker rpc_server rpc_client; do
    mkdir -p "$tmp/src/leveret-examples/$prog"
    cp "$here/$prog.go" "$tmp/src/leveret-examples/$prog/"
    (cd "$tmp/src/leveret-examples/$prog" &&
        GO111MODULE=off GOPATH="$tmp:$gocode" GOFLAGS= go build -trimpath -o "$out/$prog" .)
done
echo "built $out/new_task $out/worker $out/rpc_server $out/rpc_client"
