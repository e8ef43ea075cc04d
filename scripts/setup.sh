#!/usr/bin/env bash
# Installs whatever is missing for `make start` / `make test`, idempotently and fast when nothing changed:
# apt packages (redis-server unless REDIS_URL is set; Lua test tools for `test`), npm packages, the Python venv
# (kept outside the clone, keyed by the hash of the requirement files, so a fresh clone reuses it), then builds.
set -euo pipefail
cd "$(dirname "$0")/.."
MODE="${1:-start}"

say() { printf '[setup] %s\n' "$*" >&2; }

apt_pkgs=()
if [ -z "${REDIS_URL:-}" ] && ! command -v redis-server >/dev/null 2>&1; then apt_pkgs+=(redis-server); fi
# MLX's Linux CPU wheel bundles a reference BLAS; with a system OpenBLAS present the MLX engine is ~16x faster
# (python/pixelai_runner/backends/mlx/cpu_blas.py loads it).
if [ "$(uname -s)" = "Linux" ] && ! ldconfig -p 2>/dev/null | grep -q 'libopenblas'; then apt_pkgs+=(libopenblas0-pthread); fi
if [ "$MODE" = "test" ]; then
  command -v lua5.4 >/dev/null 2>&1 || apt_pkgs+=(lua5.4)
  command -v busted >/dev/null 2>&1 || apt_pkgs+=(lua-busted)
  [ -e /usr/share/lua/5.4/dkjson.lua ] || [ -e /usr/share/lua/5.1/dkjson.lua ] || apt_pkgs+=(lua-dkjson)
  command -v zip >/dev/null 2>&1 || apt_pkgs+=(zip)
  # headless browser checks of /docs and /admin/queues (test/integration/browser.test.ts, playwright-core)
  [ -x "${PIXELAI_CHROMIUM:-/usr/bin/chromium}" ] || apt_pkgs+=(chromium)
  # PostgreSQL server binaries: the Postgres and multi-process suites start throwaway clusters (test/support/postgres.ts).
  compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || command -v initdb >/dev/null 2>&1 || apt_pkgs+=(postgresql)
fi
if [ "${#apt_pkgs[@]}" -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    say "apt-get install ${apt_pkgs[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${apt_pkgs[@]}" >/dev/null
  else
    say "missing: ${apt_pkgs[*]} — install them with your package manager (macOS: brew install redis lua luarocks && luarocks install busted dkjson)"
    exit 1
  fi
fi

if [ ! -f node_modules/.package-lock.json ] || ! cmp -s package-lock.json node_modules/.setup-lock; then
  say "npm ci"
  npm ci --no-audit --no-fund --loglevel=error
  cp package-lock.json node_modules/.setup-lock
fi

PY="${PIXELAI_BASE_PYTHON:-}"
if [ -z "$PY" ]; then
  for candidate in python3.11 python3.12 python3; do
    if command -v "$candidate" >/dev/null 2>&1; then PY="$candidate"; break; fi
  done
fi
hash_cmd="sha256sum"; command -v sha256sum >/dev/null 2>&1 || hash_cmd="shasum -a 256"
HASH=$(cat python/requirements.txt python/requirements.lock | $hash_cmd | cut -c1-12)
VENV_ROOT="${PIXELAI_VENV_ROOT:-${XDG_CACHE_HOME:-$HOME/.cache}/pixelai}"
VENV="$VENV_ROOT/venv-$HASH"
if [ ! -f "$VENV/.complete" ]; then
  say "creating Python venv $VENV (torch, diffusers, mlx: the first time takes minutes)"
  rm -rf "$VENV"
  mkdir -p "$VENV_ROOT"
  "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q -r python/requirements.txt -c python/requirements.lock
  touch "$VENV/.complete"
fi
ln -sfn "$VENV" .venv

say "build (prisma generate, tsoa routes + spec, tsc)"
export DATABASE_URL="${DATABASE_URL:-file:./data/pixelai.db}"
npm run --silent build >/dev/null
say "ready"
