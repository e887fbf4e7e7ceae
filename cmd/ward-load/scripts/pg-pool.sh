#!/bin/bash
# usage: pg-pool.sh BINARY GRANT CONCURRENCY DURATION MAX_CONNS [extra ward-load flags]
# Like run.sh, on PostgreSQL: a fresh database wardbench (dropped and created
# through $PGADMIN_DSN, default postgres://postgres@127.0.0.1:5432/postgres),
# storage.postgres.max_conns=MAX_CONNS, the server on core 0 (GOMAXPROCS=1),
# ward-load on core 1, PostgreSQL wherever the system puts it.
set -e
BIN=$1; GRANT=$2; CONC=$3; DUR=$4; POOL=$5; shift 5
D=${WARD_BENCH_DIR:-/tmp/wardbench}   # ward.yaml (from this directory) and data/kek.key
PORT=${WARD_BENCH_PORT:-8701}
ADMIN=${PGADMIN_DSN:-postgres://postgres@127.0.0.1:5432/postgres}
DB=${WARD_BENCH_DB:-wardbench}
stop() { [ -f $D/ward.pid ] && { kill $(cat $D/ward.pid) 2>/dev/null || true; }; sleep 0.5; rm -f $D/ward.pid; }
stop
trap stop EXIT   # also when the load generator fails
psql -q "$ADMIN" -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB" >/dev/null
rm -rf $D/data/nats
WARD_STORAGE__DRIVER=postgres WARD_STORAGE__POSTGRES__DSN="${ADMIN%/*}/$DB?sslmode=disable" \
WARD_STORAGE__POSTGRES__MAX_CONNS=$POOL WARD_LISTEN=127.0.0.1:$PORT WARD_ISSUER=http://127.0.0.1:$PORT \
  GOMAXPROCS=1 taskset -c 0 $BIN serve --config $D/ward.yaml > $D/serve.log 2>&1 &
echo $! > $D/ward.pid
PID=$(cat $D/ward.pid)
for i in $(seq 100); do curl -sf http://127.0.0.1:$PORT/healthz >/dev/null && break; sleep 0.2; done
if [ "$GRANT" = refresh ]; then
  ARGS="-client bench-web -secret bench-web-secret-0123456789-abcdefghijklmnop -username loaduser -password load-user-password-0123"
else
  ARGS="-client bench-service -secret bench-service-secret-0123456789-abcdefghijkl -scope docs.read"
fi
ticks() { awk '{print $14+$15}' /proc/$PID/stat; }
( sleep 4; t0=$(ticks); s0=$(date +%s.%N); sleep 10; t1=$(ticks); s1=$(date +%s.%N); \
  echo "server CPU (10 s sample mid-run): $(echo "($t1-$t0)/100/($s1-$s0)" | bc -l | cut -c1-4) cores" ) &
SAMP=$!
taskset -c 1 ${WARD_LOAD:-/tmp/ward-load} -issuer http://127.0.0.1:$PORT -grant $GRANT -concurrency $CONC -duration $DUR $ARGS "$@"
wait $SAMP
