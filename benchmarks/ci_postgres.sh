#!/usr/bin/env bash
# PostgreSQL for the SQL-observer tests: install it from Debian (if missing), start the
# cluster on 127.0.0.1:5432, create role `worldzoo` (password `worldzoo`) and database
# `worldzoo_test`. Idempotent. The tests read the URL from WORLDZOO_TEST_PG:
#   export WORLDZOO_TEST_PG=postgresql://worldzoo:worldzoo@127.0.0.1:5432/worldzoo_test
set -euo pipefail
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else sudo -u postgres "$@"; fi; }

if ! command -v pg_lsclusters >/dev/null || [ -z "$(pg_lsclusters -h 2>/dev/null)" ]; then
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi
read -r ver name port _ < <(pg_lsclusters -h | head -1)
[ "$port" = 5432 ] || { echo "ci_postgres: cluster $ver/$name is on port $port, not 5432" >&2; exit 1; }
$SUDO pg_ctlcluster "$ver" "$name" start 2>/dev/null || true   # already running is fine
for _ in $(seq 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
pg_isready -h 127.0.0.1 -p 5432

as_pg psql -q -v ON_ERROR_STOP=1 -c "DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'worldzoo') THEN
    CREATE ROLE worldzoo LOGIN PASSWORD 'worldzoo';
  END IF; END \$\$;"
as_pg psql -tAc "SELECT 1 FROM pg_database WHERE datname = 'worldzoo_test'" | grep -q 1 \
    || as_pg createdb -O worldzoo worldzoo_test
echo "WORLDZOO_TEST_PG=postgresql://worldzoo:worldzoo@127.0.0.1:5432/worldzoo_test"
