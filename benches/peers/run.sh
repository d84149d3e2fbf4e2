#!/usr/bin/env bash
# latchkey next to better-auth on the same PostgreSQL and the same load
# generator: installs the peer (versions pinned in package.json and
# package-lock.json) into a temporary folder, builds the release binary
# unless LATCHKEY_BIN names one, and runs compare.mjs (options: --help).
#
#   benches/peers/run.sh --rounds 3 --append docs/benchmarks.md
#
# Needs node (20 or later), npm, wrk (Debian package `wrk`) and a PostgreSQL
# reachable at DATABASE_URL (default postgres://postgres@127.0.0.1:5432/postgres)
# whose user may create databases.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
for tool in node npm wrk; do
  command -v "$tool" >/dev/null || { echo "run.sh: $tool is needed" >&2; exit 1; }
done
bin=${LATCHKEY_BIN:-}
if [ -z "$bin" ]; then
  (cd "$root" && cargo build --release --bin latchkey)
  bin=$root/target/release/latchkey
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp "$here/package.json" "$here/package-lock.json" "$here/better-auth.mjs" "$here/compare.mjs" "$tmp/"
(cd "$tmp" && npm ci --no-audit --no-fund --loglevel=error)
cd "$root"
node "$tmp/compare.mjs" --latchkey-bin "$bin" "$@"
