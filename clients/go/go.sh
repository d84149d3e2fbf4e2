#!/usr/bin/env bash
# Runs the go command on this module without the Go module proxy: in GOPATH
# mode, with this directory at its import path (go.mod's module line) in a
# temporary GOPATH, followed by Debian's Go packages in /usr/share/gocode.
#
#   clients/go/go.sh test ./...            clients/go/go.sh vet ./...
#   clients/go/go.sh test -tags e2e ./...  (the end-to-end tests: run-e2e.sh go)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
module="$(sed -n 's/^module //p' "$here/go.mod")"
gopath="$(mktemp -d)"
trap 'rm -rf "$gopath"' EXIT
mkdir -p "$gopath/src/$(dirname "$module")"
ln -s "$here" "$gopath/src/$module"
cd "$gopath/src/$module"
# The build cache lives under $HOME; without one (some CI), in the temporary GOPATH.
if [ -z "${HOME:-}" ] && [ -z "${GOCACHE:-}" ] && [ -z "${XDG_CACHE_HOME:-}" ]; then
    export GOCACHE="$gopath/cache"
fi
GO111MODULE=off GOPATH="$gopath:/usr/share/gocode" GOFLAGS="" go "$@"
