#!/usr/bin/env bash
# Run the test suite; start a throwaway PostgreSQL on loopback so that the catalog tests also
# run against PostgreSQL (unless RECSYS_TEST_POSTGRES_URL already points at a server). Without
# PostgreSQL installed (scripts/system_packages.sh) those tests are skipped
# (RECSYS_REQUIRE_POSTGRES=1 makes that a failure).
#
# Usage: scripts/test.sh [-h|--help] [PYTEST ARGS...]
#   Every other argument goes to pytest (e.g. scripts/test.sh -x tests/test_cli.py); pytest's
#   own help is .venv/bin/pytest --help. VENV picks the virtual environment whose pytest runs
#   (default .venv).
set -euo pipefail
for arg in "$@"; do
  case "$arg" in
    -h | --help) sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"; exit 0 ;;
  esac
done
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
