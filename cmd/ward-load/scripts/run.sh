#!/bin/bash
# usage: run.sh BINARY GRANT CONCURRENCY DURATION [extra ward-load flags]
# Starts a fresh server (GOMAXPROCS=1, core 0), runs ward-load on core 1,
# prints the load report and the server's CPU use during the run.
set -e
BIN=$1; GRANT=$2; CONC=$3; DUR=$4; shift 4
D=/tmp/wardbench  # must hold ward.yaml (copy it from this directory) and data/kek.key
pkill_pid() { [ -f $D/ward.pid ] && { kill $(cat $D/ward.pid) 2>/dev/null || true; }; sleep 0.5; rm -f $D/ward.pid; }
pkill_pid
rm -f $D/data/ward.db*
GOMAXPROCS=1 taskset -c 0 $BIN serve --config $D/ward.yaml > $D/serve.log 2>&1 &
echo $! > $D/ward.pid
PID=$(cat $D/ward.pid)
for i in $(seq 50); do curl -sf http://127.0.0.1:8701/healthz >/dev/null && break; sleep 0.1; done
if [ "$GRANT" = refresh ]; then
  ARGS="-client bench-web -secret bench-web-secret-0123456789-abcdefghijklmnop -username loaduser -password load-user-password-0123"
else
  ARGS="-client bench-service -secret bench-service-secret-0123456789-abcdefghijkl -scope docs.read"
fi
ticks() { awk '{print $14+$15}' /proc/$PID/stat; }
( sleep 4; t0=$(ticks); s0=$(date +%s.%N); sleep 10; t1=$(ticks); s1=$(date +%s.%N); \
  echo "server CPU (10 s sample mid-run): $(echo "($t1-$t0)/100/($s1-$s0)" | bc -l | cut -c1-4) cores" ) &
SAMP=$!
taskset -c 1 /tmp/ward-load -issuer http://127.0.0.1:8701 -grant $GRANT -concurrency $CONC -duration $DUR $ARGS "$@"
wait $SAMP
pkill_pid
