#!/usr/bin/env bash
# Runs every suite (pytest, jest, busted) even when one fails, then prints one plain total line for CI:
#   N passed, N failed, N skipped
# Expects scripts/setup.sh test to have run (make test does both).
set -uo pipefail
cd "$(dirname "$0")/.."
mkdir -p build
PY=.venv/bin/python
export DATABASE_URL="${DATABASE_URL:-file:./data/pixelai.db}"
status=0

# The tiny demo models are test fixtures for both engines; building them is seeded and idempotent.
$PY scripts/make_tiny_model.py --out models >/dev/null || status=1

# Lint and format checks count as one suite: a finding fails the run like a failing test.
echo "== lint (eslint, prettier, ruff) =="
if npm run --silent lint && $PY -m ruff check . && $PY -m ruff format --check .; then
  echo "lint: ok" > build/lint.txt
else
  echo "lint: failed" > build/lint.txt; status=1
fi

echo "== pytest =="
$PY -m pytest python/tests -q -p no:cacheprovider --junitxml=build/pytest.xml || status=1

echo "== jest =="
npx jest --runInBand --forceExit --json --outputFile=build/jest.json || status=1

echo "== lua (busted) =="
bash scripts/test-lua.sh | tee build/lua.txt
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

$PY - <<'PY' || status=1
import json, re, xml.etree.ElementTree as ET
from pathlib import Path
passed = failed = skipped = 0
try:
    root = ET.parse("build/pytest.xml").getroot()
    suites = [root] if root.tag == "testsuite" else list(root)
    for s in suites:
        n, f, e, sk = (int(s.get(k, 0)) for k in ("tests", "failures", "errors", "skipped"))
        passed += n - f - e - sk; failed += f + e; skipped += sk
except Exception as exc:  # a suite that produced no report counts as a failure
    print(f"pytest report missing: {exc}"); failed += 1
try:
    j = json.loads(Path("build/jest.json").read_text())
    passed += j["numPassedTests"]; failed += j["numFailedTests"]; skipped += j["numPendingTests"] + j.get("numTodoTests", 0)
    failed += j.get("numRuntimeErrorTestSuites", 0)
except Exception as exc:
    print(f"jest report missing: {exc}"); failed += 1
m = re.search(r"^lua: (\d+) passed, (\d+) failed(?:, (\d+) skipped)?", Path("build/lua.txt").read_text(), re.M) if Path("build/lua.txt").exists() else None
if m:
    passed += int(m.group(1)); failed += int(m.group(2)); skipped += int(m.group(3) or 0)
else:
    print("lua summary missing"); failed += 1
lint = Path("build/lint.txt").read_text().strip() if Path("build/lint.txt").exists() else "lint: missing"
if lint == "lint: ok":
    passed += 1
else:
    print(lint); failed += 1
print(f"{passed} passed, {failed} failed, {skipped} skipped")
raise SystemExit(1 if failed else 0)
PY
[ $? -eq 0 ] || status=1
exit $status
