#!/usr/bin/env bash
# Start or stop a throwaway PostgreSQL server on loopback for the tests.
#   scripts/pg_throwaway.sh start DIR   -> prints the URL (postgresql+psycopg://...) on stdout
#   scripts/pg_throwaway.sh stop DIR
#   scripts/pg_throwaway.sh -h|--help
# start makes DIR (initdb, the server's log and socket go there); stop stops the server and
# removes DIR whole.
# PGPORT_THROWAWAY=PORT picks the server's port (default: a free one).
# PG_THROWAWAY_SETTINGS="name=value ..." adds server settings (e.g. shared_buffers=6GB).
# initdb refuses to run as root, so as root the server runs as the unprivileged user `nobody`.
set -euo pipefail
usage="usage: pg_throwaway.sh start|stop DIR (-h for help)"
case "${1-}" in
  -h | --help) sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"; exit 0 ;;
esac
[ $# -eq 2 ] || { echo "$usage" >&2; exit 2; }
action=$1
dir=$2

pg_bin() {
  if command -v initdb >/dev/null 2>&1; then dirname "$(command -v initdb)"; return; fi
  local found
  found=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [ -n "$found" ] || { echo "pg_throwaway: PostgreSQL not found (apt-get install postgresql)" >&2; exit 1; }
  echo "$found"
}

as_owner() {
  if [ "$(id -u)" = 0 ]; then runuser -u nobody -- "$@"; else "$@"; fi
}

bin=$(pg_bin)
case "$action" in
  start)
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown nobody "$dir"
    port=${PGPORT_THROWAWAY:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')}
    as_owner "$bin/initdb" -D "$dir/data" -U postgres --auth=trust --no-sync >"$dir/initdb.log" 2>&1
    settings=""
    for setting in ${PG_THROWAWAY_SETTINGS:-}; do settings="$settings -c $setting"; done
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
      -o "-h 127.0.0.1 -p $port -k $dir -F -c fsync=off -c full_page_writes=off$settings" start >/dev/null
    echo "postgresql+psycopg://postgres@127.0.0.1:$port/postgres"
    ;;
  stop)
    [ -d "$dir/data" ] && as_owner "$bin/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$dir"
    ;;
  *) echo "$usage" >&2; exit 2 ;;
esac
