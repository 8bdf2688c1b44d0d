#!/usr/bin/env bash
# Debian packages the project uses: the Fashion-MNIST files, a PostgreSQL server for tests,
# Chromium for the web page's browser test, librsvg's rsvg-convert (OpenMoji's SVGs) and a
# Java 17 runtime for pyspark (`recsys train --cf-engine spark`, tests/test_spark*.py).
# Installs what is missing when run as root with apt-get; otherwise says what to install.
#
# Usage: bash scripts/system_packages.sh [-h|--help]; it takes no other arguments.
set -euo pipefail
case "${1-}" in
  -h | --help) sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"; exit 0 ;;
  "") ;;
  *) echo "system_packages.sh: unknown argument '$1': it takes none (-h for help)" >&2; exit 2 ;;
esac
need=()
dpkg -s dataset-fashion-mnist >/dev/null 2>&1 || need+=(dataset-fashion-mnist)
if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  need+=(postgresql)
fi
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v rsvg-convert >/dev/null 2>&1 || need+=(librsvg2-bin)
command -v java >/dev/null 2>&1 || need+=(openjdk-17-jre-headless)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian packages: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
else
  echo "optional Debian packages missing: ${need[*]} (sudo apt-get install ${need[*]});" \
       "tests that need them are skipped" >&2
fi
