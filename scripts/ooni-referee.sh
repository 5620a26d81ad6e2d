#!/usr/bin/env bash
# OONI's own pipeline (ooni/data: observations + rule-based web analysis, on an in-process
# ClickHouse) judges netvigil's measurements of every testbed profile against the truth.
#
#   scripts/ooni-referee.sh OONIDATA_CHECKOUT [PROFILE ...]
#   scripts/ooni-referee.sh OONIDATA_CHECKOUT --measured DIR     # judge saved runs again
#
# OONIDATA_CHECKOUT: a checkout of github.com/ooni/data (e.g. from a mirror:
#   git -C /path/to/ooni+data/repo archive HEAD | tar -x -C /tmp/oonidata-src).
# It is installed with chdb into a scratch venv outside the repository ($OONI_REFEREE_VENV,
# default /tmp/ooni-referee/venv); nothing of it is committed. Measuring needs root (the
# testbed); PROFILE defaults to every shipped profile. Each profile's run is kept in
# $OONI_REFEREE_OUT/<profile>/ (default /tmp/ooni-referee/runs): truth.jsonl,
# measurements.jsonl, referee.txt. How a verdict is read from OONI's analysis row, and the two
# adaptations to the testbed (198.18.0.0/15 is not a bogon there; no ASN database), are in
# scripts/ooni_referee.py. A manual tool: CI has no ooni/data checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

if [ $# -lt 1 ] || [ ! -d "$1/oonipipeline" ]; then
  echo "usage: $0 OONIDATA_CHECKOUT [PROFILE ... | --measured DIR]" >&2
  echo "  (OONIDATA_CHECKOUT must contain oonipipeline/: a checkout of ooni/data)" >&2
  exit 2
fi
CHECKOUT=$(cd "$1" && pwd)
shift
case "$CHECKOUT/" in "$REPO"/*)
  echo "put the ooni/data checkout outside the repository (its code is not committed)" >&2
  exit 2
esac

VENV=${OONI_REFEREE_VENV:-/tmp/ooni-referee/venv}
OUT=${OONI_REFEREE_OUT:-/tmp/ooni-referee/runs}
NETVIGIL=${NETVIGIL:-$REPO/.venv/bin/netvigil}

if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import chdb, oonipipeline' 2>/dev/null; then
  echo "referee: installing ooni/data ($CHECKOUT) and chdb into $VENV"
  UV_PYTHON_DOWNLOADS=never uv venv -q --clear --python "${PYTHON:-python3}" "$VENV"
  uv pip install -q --python "$VENV/bin/python" "$CHECKOUT/oonipipeline" chdb
fi

dirs=()
if [ "${1:-}" = "--measured" ]; then
  [ $# -eq 2 ] || { echo "--measured DIR" >&2; exit 2; }
  for d in "$2"/*/; do
    [ -f "$d/measurements.jsonl" ] && [ -f "$d/truth.jsonl" ] && dirs+=("${d%/}")
  done
else
  profiles=("$@")
  if [ ${#profiles[@]} -eq 0 ]; then
    mapfile -t profiles < <("$NETVIGIL" testbed profiles | awk '{print $1}')
  fi
  for profile in "${profiles[@]}"; do
    dir="$OUT/$profile"
    mkdir -p "$dir"
    "$NETVIGIL" testbed truth --profile "$profile" --json > "$dir/truth.jsonl"
    "$REPO/.venv/bin/python" -c 'import json, sys
for line in open(sys.argv[1]):
    print(json.loads(line)["url"])' "$dir/truth.jsonl" > "$dir/urls.txt"
    rm -f "$dir/measurements.jsonl"
    echo "referee: measuring $(wc -l < "$dir/urls.txt") URLs of $profile in the testbed"
    "$NETVIGIL" testbed run --profile "$profile" -- "$NETVIGIL" measure --consent --no-progress \
      --json -f "$dir/urls.txt" -o "$dir/measurements.jsonl" > "$dir/verdicts.jsonl"
    dirs+=("$dir")
  done
fi
[ ${#dirs[@]} -gt 0 ] || { echo "nothing to judge" >&2; exit 1; }

for dir in "${dirs[@]}"; do
  "$VENV/bin/python" "$REPO/scripts/ooni_referee.py" "$dir" > "$dir/referee.txt"
  head -1 "$dir/referee.txt"
done
echo "per-URL verdicts: <dir>/referee.txt (✓/✗ truth, OONI's verdict, URL, OONI's rule per layer)"
