#!/usr/bin/env bash
# Renders the built-in sign-in emails to PNG screenshots for the README, with
# headless Chromium (Debian: `apt-get install chromium`). Uses the templates
# and settings the binary sees, so LATCHKEY_TEMPLATE_DIR / LATCHKEY_APP_NAME
# preview your own.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-docs/emails}"
mkdir -p "$out"
cargo build --quiet
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
for purpose in code link code-and-link no-account; do
    name="$(echo "$purpose" | tr - _)"
    file="sign_in_$name"
    [ "$purpose" = no-account ] && file="no_account"
    LATCHKEY_APP_NAME="${LATCHKEY_APP_NAME:-Example}" \
        target/debug/latchkey email preview --purpose "$purpose" --part html > "$work/$file.html"
    chromium --headless --no-sandbox --disable-gpu --hide-scrollbars \
        --disable-background-networking --disable-component-update --disable-sync \
        --no-first-run --user-data-dir="$work/profile" \
        --window-size=560,640 --screenshot="$out/$file.png" "file://$work/$file.html" 2> /dev/null
    echo "$out/$file.png"
done
