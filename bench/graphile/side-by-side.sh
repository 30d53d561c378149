#!/usr/bin/env bash
# Issue #11's comparison, in one run on one machine: graphile-worker's no-op jobs/s (noop.mjs)
# against Nervix's task cycles/s on PostgreSQL (`nervix bench tasks`), each on a database
# created fresh on the local PostgreSQL.
#
#   (cd bench/graphile && npm ci) && B=target/release/nervix bench/graphile/side-by-side.sh
set -euo pipefail
cd "$(dirname "$0")"
B=$(realpath "${B:-../../target/release/nervix}")
PG=${PG:-postgres://postgres@127.0.0.1:5432}
fresh() { psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS $1" -c "CREATE DATABASE $1" 2>/dev/null; }

fresh graphile_bench
echo "graphile-worker: $(DATABASE_URL=$PG/graphile_bench node noop.mjs 2>/dev/null | grep "^{")"

fresh nervix_bench
data=$(mktemp -d)
NERVIX_DATABASE_URL=$PG/nervix_bench NERVIX_DATA_DIR=$data NERVIX_RATE_LIMIT_ENROLL=0 \
  NERVIX_RATE_LIMIT_AGENT=0 "$B" serve --bind 127.0.0.1:18083 >"$data/serve.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 100); do curl -sf http://127.0.0.1:18083/readyz >/dev/null && break; sleep 0.2; done
token=$(NERVIX_DATABASE_URL=$PG/nervix_bench NERVIX_DATA_DIR=$data "$B" admin create-token | tail -1)
for c in 16 64; do
  echo "nervix (PostgreSQL, c=$c): $(NERVIX_ADMIN_TOKEN=$token "$B" bench tasks \
    --server http://127.0.0.1:18083 -n 3000 -c $c 2>&1 | grep throughput)"
done
