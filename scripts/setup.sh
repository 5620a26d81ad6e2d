#!/usr/bin/env bash
# Install everything netvigil needs on a fresh Debian/Ubuntu machine, idempotently:
# system tools for the testbed (iproute2, nftables, util-linux) and the Python
# environment pinned by uv.lock. Safe to run again; fast when nothing is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)
command -v nft >/dev/null 2>&1 || need_apt+=(nftables)
command -v unshare >/dev/null 2>&1 || need_apt+=(util-linux)
command -v nsenter >/dev/null 2>&1 || need_apt+=(util-linux)
command -v lsns >/dev/null 2>&1 || need_apt+=(util-linux)
# certutil: the trust-store audit's tests build a real Firefox (NSS) certificate database.
command -v certutil >/dev/null 2>&1 || need_apt+=(libnss3-tools)
# PostgreSQL: the collector's second backend; its tests start a throwaway cluster (scripts/pg-test-cluster.sh).
command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt+=(postgresql)
# Chromium: the explorer's browser tests drive Debian's chromium with Playwright (PyPI, dev group);
# Playwright's own browser download is not used. The testbed's browser role runs it headless.
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
# Firefox ESR: the testbed's browser role (netvigil testbed browse) visits sites with it too.
[ -x /usr/bin/firefox-esr ] || need_apt+=(firefox-esr)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: missing ${need_apt[*]}; run as root (sudo make ...) or install them yourself" >&2
    exit 1
  fi
  echo "setup: installing ${need_apt[*]} (apt)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "setup: netvigil needs Python 3.11 or newer as '$PY' (set PYTHON=...)" >&2
  exit 1
fi
UV_VERSION=0.13.9
if ! command -v uv >/dev/null 2>&1 || [ "$(uv --version | awk '{print $2}')" != "$UV_VERSION" ]; then
  echo "setup: installing uv $UV_VERSION (pip)"
  "$PY" -m pip install -q "uv==$UV_VERSION"
fi
export UV_PYTHON_DOWNLOADS=never
# Bytecode compiled once at install: with PYTHONDONTWRITEBYTECODE set (as on some machines)
# every process would otherwise compile pandas/pyarrow/dask again (~2.5 s per pipeline worker).
uv sync --frozen --compile-bytecode --python "$PY" -q

# oonidata (the referee for "is our output valid OONI data?") pins an old cryptography, so it
# lives in a venv of its own, pinned with hashes; the tests call it as a separate process.
if [ ! -x .venv-oonidata/bin/python ] || ! .venv-oonidata/bin/python -c 'import oonidata' 2>/dev/null; then
  uv venv -q --clear --python "$PY" .venv-oonidata
  uv pip install -q --python .venv-oonidata/bin/python --require-hashes -r tools/oonidata-requirements.txt
fi
