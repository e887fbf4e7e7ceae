#!/bin/bash
# usage: pg-ab.sh ROUNDS BEFORE_BINARY AFTER_BINARY [DURATION]
# Interleaved A/B on PostgreSQL with pg-pool.sh (pool 16, 16 workers): for
# each round, client_credentials then refresh, each with BEFORE then AFTER,
# a fresh database per run. One line per run: tokens/s, latency, the
# server's share of its core, tokens per server CPU-second, commits per
# token (pg_stat_database.xact_commit of the run's database, startup and
# background work included) and the load average at the end of the run.
# GRANTS (default "client_credentials refresh") narrows the grants run.
set -e
ROUNDS=$1; A=$2; B=$3; DUR=${4:-20s}
cd "$(dirname "$0")"
ADMIN=${PGADMIN_DSN:-postgres://postgres@127.0.0.1:5432/postgres}
DB=${WARD_BENCH_DB:-wardbench}
for r in $(seq $ROUNDS); do for g in ${GRANTS:-client_credentials refresh}; do for bin in $A $B; do
  if ! out=$(./pg-pool.sh $bin $g 16 $DUR 16 -json 2>&1); then
    echo "$r $g $bin: run failed: $(echo "$out" | tail -2 | tr '\n' ' ')"; continue
  fi
  commits=$(psql -Atq "$ADMIN" -c "SELECT xact_commit FROM pg_stat_database WHERE datname='$DB'")
  OUT="$out" python3 - "$bin" "$g" "$r" "$commits" "$(cut -d' ' -f1 /proc/loadavg)" <<'PY'
import json, os, re, sys
b, g, r, commits, load = sys.argv[1:]
txt = os.environ["OUT"]
j = json.loads(txt[txt.index("{"):txt.rindex("}") + 1])
cpu = float(re.search(r"mid-run\): *([0-9.]+) cores", txt).group(1))
tps = j["tokens_per_second"]
print(f"{r} {g:18s} {b:24s} {tps:7.0f}/s p50 {j['p50_ms']:6.1f} ms p99 {j['p99_ms']:6.1f} ms "
      f"server {cpu:.2f} cores, {tps / cpu if cpu else 0:6.0f} per CPU-s, "
      f"{int(commits) / max(j['ok'], 1):.2f} commits/token, errors {sum((j['errors'] or {}).values())}, "
      f"broken chains {j.get('broken_chains', 0)}, load {load}", flush=True)
PY
done; done; done
