#!/usr/bin/env bash
# Packs aseprite/extension/ into dist/pixelai.aseprite-extension (a zip with
# package.json at its root, which is what Aseprite's installer expects).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SRC="$ROOT/aseprite/extension"
OUT_DIR="$ROOT/dist"
OUT="$OUT_DIR/pixelai.aseprite-extension"

[ -f "$SRC/package.json" ] || { echo "build-extension: $SRC/package.json missing" >&2; exit 1; }
mkdir -p "$OUT_DIR"
rm -f "$OUT"

# Only what ships: the manifest and the Lua modules (no specs, no tools).
cd "$SRC"
files=(package.json *.lua)
if command -v zip >/dev/null 2>&1; then
  zip -q -X "$OUT" "${files[@]}"
else
  python3 - "$OUT" "${files[@]}" <<'PY'
import sys, zipfile
out, names = sys.argv[1], sys.argv[2:]
with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
    for name in names:
        z.write(name, name)
PY
fi
echo "built $OUT (${#files[@]} files)"
