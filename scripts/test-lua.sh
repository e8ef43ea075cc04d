#!/usr/bin/env bash
# Runs the Aseprite extension's busted specs under Lua 5.4 (Aseprite embeds
# 5.4; Debian's busted may default to another Lua) and ends with one plain
# line that CI recognises:  lua: N passed, N failed[, N skipped]
# Exit status is non-zero when anything failed or busted itself broke.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LUA="${LUA:-lua5.4}"

if ! command -v "$LUA" >/dev/null 2>&1; then
  echo "test-lua: $LUA not found (apt-get install lua5.4 lua-busted lua-dkjson)" >&2
  echo "lua: 0 passed, 1 failed"
  exit 1
fi
BUSTED="$(command -v busted || true)"
if [ -z "$BUSTED" ]; then
  echo "test-lua: busted not found (apt-get install lua-busted)" >&2
  echo "lua: 0 passed, 1 failed"
  exit 1
fi

# Debian's /usr/bin/busted is a Lua script: run it with the interpreter we
# want. A luarocks-installed busted is a shell wrapper that takes --lua.
if head -n 1 "$BUSTED" | grep -q 'lua'; then
  RUN=("$LUA" "$BUSTED")
else
  RUN=("$BUSTED" "--lua=$LUA")
fi

OUT="$(mktemp)"
trap 'rm -f "$OUT"' EXIT

cd "$ROOT/aseprite"
# TAP output names every test, which is what a CI log needs; LUA tells the
# tools spec which interpreter runs tools/*.lua.
LUA="$LUA" "${RUN[@]}" --output=TAP "$@" 2>&1 | tee "$OUT"
rc=${PIPESTATUS[0]}

passed=$(grep -Ec '^ok [0-9]+ - ' "$OUT" | tr -d ' ')
skipped=$(grep -Ec '^ok [0-9]+ - # SKIP' "$OUT" | tr -d ' ')
failed=$(grep -Ec '^not ok [0-9]+' "$OUT" | tr -d ' ')
passed=$((passed - skipped))

# busted failing without a "not ok" line (a spec that does not load, a
# crash) must still count as a failure.
if [ "$rc" -ne 0 ] && [ "$failed" -eq 0 ]; then
  failed=1
fi

if [ "$skipped" -gt 0 ]; then
  echo "lua: $passed passed, $failed failed, $skipped skipped"
else
  echo "lua: $passed passed, $failed failed"
fi
[ "$failed" -eq 0 ] && [ "$rc" -eq 0 ]
