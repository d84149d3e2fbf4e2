#!/usr/bin/env bash
# Runs each client's end-to-end tests against a real latchkey: the debug
# binary (build it first: `cargo build`) on free loopback ports, with a fresh
# data dir (SQLite, dev mailbox: emails land in $LATCHKEY_DATA_DIR/mailbox).
#
#   clients/run-e2e.sh [python] [typescript] [go] [rust]     (default: every client)
#
# The tests find the server through LATCHKEY_E2E_* variables, and run
# `latchkey keys rotate` with the same LATCHKEY_* settings as the server.
# Each client's tools must be installed (see .ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"

clients=("$@")
[ ${#clients[@]} -gt 0 ] || clients=(python typescript go rust)

work="$(mktemp -d)"
server=""
cleanup() {
    if [ -n "$server" ]; then
        kill -TERM "$server" 2>/dev/null || true
        wait "$server" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

export LATCHKEY_BIN="$root/target/debug/latchkey"
export LATCHKEY_DATA_DIR="$work/data"
export LATCHKEY_GRPC_ADDR=127.0.0.1:0 LATCHKEY_HTTP_ADDR=127.0.0.1:0 LATCHKEY_METRICS_ADDR=127.0.0.1:0
export LATCHKEY_ISSUER=https://login.e2e.test LATCHKEY_AUDIENCE=e2e-app
# A low per-address email limit, so the tests can reach it (retry_after).
export LATCHKEY_RATE_LIMIT_EMAIL=3
# Replicas pick up a rotated key within a second.
export LATCHKEY_KEY_RELOAD_INTERVAL=1s
export LATCHKEY_LOG=info LATCHKEY_LOG_FORMAT=json
unset LATCHKEY_DATABASE_URL LATCHKEY_SMTP_URL

"$LATCHKEY_BIN" serve > "$work/server.log" 2>&1 &
server=$!

# The server logs its bound addresses once it is serving.
addresses() {
    python3 - "$work/server.log" <<'PY'
import json, sys
for line in open(sys.argv[1], encoding="utf-8", errors="replace"):
    try:
        fields = json.loads(line).get("fields", {})
    except ValueError:
        continue
    if fields.get("message") == "latchkey is serving":
        print(fields["grpc"], fields["http"])
        break
PY
}
for _ in $(seq 1 100); do
    read -r grpc http < <(addresses) || true
    [ -n "${grpc:-}" ] && break
    kill -0 "$server" 2>/dev/null || { cat "$work/server.log"; exit 1; }
    sleep 0.1
done
if [ -z "${grpc:-}" ]; then
    echo "latchkey did not start serving:" >&2
    cat "$work/server.log" >&2
    exit 1
fi
export LATCHKEY_E2E_GRPC="$grpc" LATCHKEY_E2E_HTTP="http://$http"
export LATCHKEY_E2E_API_KEY="$(cat "$LATCHKEY_DATA_DIR/dev-api-key")"
export LATCHKEY_E2E_MAILBOX="$LATCHKEY_DATA_DIR/mailbox"
echo "latchkey serving: gRPC $grpc, HTTP $http"

# The Rust tests pass without a server (they skip): each records its name in
# LATCHKEY_E2E_RAN when it ran to its end, and every test the binary lists
# must be there.
rust_e2e() {
    export LATCHKEY_E2E_RAN="$work/rust-ran"
    : > "$LATCHKEY_E2E_RAN"
    cargo test --quiet -p latchkey-client --all-features || return 1
    local listed ran
    listed="$(cargo test --quiet -p latchkey-client --all-features --test e2e -- --list --format=terse | sed -n 's/: test$//p' | sort)"
    ran="$(sort "$LATCHKEY_E2E_RAN")"
    if [ -z "$listed" ] || [ "$listed" != "$ran" ]; then
        echo "the Rust end-to-end tests did not all run against the server:" >&2
        echo "listed: $(echo $listed)" >&2
        echo "ran:    $(echo $ran)" >&2
        return 1
    fi
}

status=0
for client in "${clients[@]}"; do
    echo "== $client client, end to end"
    case "$client" in
        python) (cd clients/python && python3 -m pytest -q -p no:cacheprovider) || status=1 ;;
        typescript) (cd clients/typescript && npm test) || status=1 ;;
        go) clients/go/go.sh test -count=1 -tags e2e ./... || status=1 ;;
        rust) rust_e2e || status=1 ;;
        *) echo "unknown client $client" >&2; status=1 ;;
    esac
done
if grep -q '"level":"ERROR"' "$work/server.log"; then
    echo "the server logged errors during the client tests:" >&2
    grep '"level":"ERROR"' "$work/server.log" >&2
    status=1
fi
exit $status
