#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for tests and CI, in DIR:
#   scripts/pg-test-cluster.sh start DIR   # prints the DSN (also written to DIR/dsn)
#   scripts/pg-test-cluster.sh stop DIR    # stops it (the caller deletes DIR)
# Uses the machine's PostgreSQL binaries (PATH, then /usr/lib/postgresql/*/bin; scripts/setup.sh
# installs them). Listens on 127.0.0.1 (a free port) and on a unix socket in DIR only, with
# fsync=on and SCRAM password authentication (a random password). initdb refuses to run as
# root, so as root the cluster belongs to the 'postgres' user (created if missing) and DIR must
# be reachable by it (for example a directory made with mktemp -d under /tmp).
set -euo pipefail

usage() {
  echo "usage: $0 start|stop DIR" >&2
  exit 2
}
[ $# -eq 2 ] || usage
cmd=$1
dir=$(realpath -m -- "$2")

find_bin() {
  if command -v "$1" >/dev/null 2>&1; then
    command -v "$1"
    return 0
  fi
  local found
  found=$(ls -d /usr/lib/postgresql/*/bin/"$1" 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -n "$found" ]; then
    echo "$found"
    return 0
  fi
  echo "pg-test-cluster: '$1' not found (install PostgreSQL: scripts/setup.sh)" >&2
  return 1
}

as_owner() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

case "$cmd" in
start)
  initdb=$(find_bin initdb)
  pg_ctl=$(find_bin pg_ctl)
  if [ -e "$dir/data" ]; then
    echo "pg-test-cluster: $dir/data already exists" >&2
    exit 1
  fi
  mkdir -p -- "$dir"
  if [ "$(id -u)" -eq 0 ]; then
    if ! getent passwd postgres >/dev/null; then
      useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin postgres
    fi
    chown postgres: -- "$dir"
    if ! runuser -u postgres -- test -w "$dir"; then
      echo "pg-test-cluster: user postgres cannot write $dir (is a parent directory private?)" >&2
      exit 1
    fi
  fi
  chmod 700 -- "$dir"
  password=$(od -An -tx1 -N24 /dev/urandom | tr -d ' \n')
  umask 077
  printf '%s\n' "$password" >"$dir/pwfile"
  [ "$(id -u)" -ne 0 ] || chown postgres: -- "$dir/pwfile"
  as_owner "$initdb" -D "$dir/data" -U postgres --pwfile="$dir/pwfile" --auth=scram-sha-256 \
    --encoding=UTF8 --locale=C.UTF-8 --no-instructions >"$dir/initdb.log" 2>&1 || {
    cat "$dir/initdb.log" >&2
    exit 1
  }
  rm -f -- "$dir/pwfile"
  for attempt in 1 2 3 4 5; do
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    opts="-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$dir"
    opts="$opts -c fsync=on -c synchronous_commit=on -c full_page_writes=on -c max_connections=200"
    if as_owner "$pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 -o "$opts" start >/dev/null; then
      dsn="postgresql://postgres:$password@127.0.0.1:$port/postgres"
      printf '%s\n' "$dsn" >"$dir/dsn"
      printf '%s\n' "$dsn"
      exit 0
    fi
    echo "pg-test-cluster: start on port $port failed (attempt $attempt)" >&2
  done
  cat "$dir/server.log" >&2 || true
  exit 1
  ;;
stop)
  pg_ctl=$(find_bin pg_ctl)
  if [ -f "$dir/data/postmaster.pid" ]; then
    as_owner "$pg_ctl" -D "$dir/data" -m immediate -w -t 60 stop >/dev/null
  fi
  ;;
*)
  usage
  ;;
esac
