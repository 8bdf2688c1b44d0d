#!/usr/bin/env bash
# Run the test suite; start a throwaway PostgreSQL on loopback so that the catalog tests also
# run against PostgreSQL (unless RECSYS_TEST_POSTGRES_URL already points at a server).
set -euo pipefail
cd "$(dirname "$0")/.."
have_pg() { command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; }
if [ -z "${RECSYS_TEST_POSTGRES_URL:-}" ] && have_pg; then
  pgdir=$(mktemp -d /tmp/recsys-pg.XXXXXX)
  trap 'scripts/pg_throwaway.sh stop "$pgdir"' EXIT
  RECSYS_TEST_POSTGRES_URL=$(scripts/pg_throwaway.sh start "$pgdir")
  export RECSYS_TEST_POSTGRES_URL
  echo "throwaway PostgreSQL at $RECSYS_TEST_POSTGRES_URL"
fi
"${VENV:-.venv}/bin/pytest" "$@"
