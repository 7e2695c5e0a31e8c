#!/usr/bin/env bash
# Cost of route `rate_limit`: the same upstream route with no limit, with a local limit that never
# refuses, with a `scope: global` strict limit through Redis, and with `scope: global, sync: 50ms`
# shared by two sluice instances (against the same two instances with no limit); then limits that
# refuse most requests (100/s), to show the 429 path. wrk keep-alive -t2 -c$CONNS --latency
# against one instance (two wrk -t1 -c$((CONNS/2)), one per instance, for the two-instance cases),
# ROUNDS interleaved rounds of DUR s; prints per-round lines and a markdown table of medians,
# with the share of non-2xx answers (429s) and Redis script calls (EVALSHA) per request.
# One nginx backend (bench/peers/backend.conf.in) and one redis-server on private ports, sluice
# `workers: $WORKERS` per instance, access log off. Redis uses `on_failure: deny`, so a Redis
# failure or timeout shows up as a non-2xx answer instead of a silently admitted request.
# Loopback only, bounded in time, and every process it starts is stopped by PID.
#   bench/ratelimit.sh          ROUNDS=3 DUR=5 CONNS=50 WORKERS=1 REDIS_TIMEOUT=50ms KEEP=0
#                               BIN=build/release/sluice (KEEP=1 keeps the scratch dir and wrk output)
set -Eeuo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
ROUNDS=${ROUNDS:-3}; DUR=${DUR:-5}; CONNS=${CONNS:-50}; WORKERS=${WORKERS:-1}
REDIS_TIMEOUT=${REDIS_TIMEOUT:-50ms}; KEEP=${KEEP:-0}
BIN=${BIN:-$PWD/build/release/sluice}
[ -x "$BIN" ] || { echo "build the release binary first: make release" >&2; exit 1; }
for tool in nginx redis-server redis-cli wrk curl ss; do
  command -v "$tool" >/dev/null || { echo "needs $tool" >&2; exit 1; }
done

BACKEND=9401; REDIS=9431
declare -A PORT=(
  [none]=9411 [none-b]=9412 [local]=9413 [strict]=9414
  [sync-a]=9415 [sync-b]=9416 [local-429]=9417 [strict-429]=9418)
ports_free $BACKEND $REDIS "${PORT[@]}"

RUN=$(mktemp -d /tmp/sluice-ratelimit.XXXXXX)
mkdir -p "$RUN/tmp" "$RUN/out"
PIDS=(); EXTRA_PIDS=()  # servers; EXTRA_PIDS: the wrk runs in the background right now
trap bench_cleanup EXIT

# --- backend and redis
sed "s/@PORT@/$BACKEND/g" bench/peers/backend.conf.in >"$RUN/backend.conf"
nginx -p "$RUN/" -c "$RUN/backend.conf" -g 'daemon off;' >"$RUN/backend.out" 2>&1 &
PIDS+=($!)
redis-server --port "$REDIS" --bind 127.0.0.1 --save "" --appendonly no --dir "$RUN" \
  --logfile "$RUN/redis.log" &
PIDS+=($!)

# --- sluice instances: conf NAME [RATE_LIMIT_FLOW_YAML]
REDIS_YAML="rate_limits: { redis: { address: 127.0.0.1:$REDIS, timeout: $REDIS_TIMEOUT, on_failure: deny } }"
conf() {
  local limit=${2:+, rate_limit: [$2]} redis=""
  [[ "${2:-}" == *global* ]] && redis=$REDIS_YAML
  cat >"$RUN/$1.yaml" <<YAML
listen: 127.0.0.1:${PORT[$1]}
workers: $WORKERS
shutdown_timeout: 2s
log: { access: off, error: stderr, level: warn }
$redis
upstreams:
  app: [127.0.0.1:$BACKEND]
routes:
  - { match: { path: / }, upstream: app$limit }
YAML
}
HUGE="rate: 100000000/s"
conf none
conf none-b
conf local "{ key: ip, $HUGE }"
conf strict "{ key: ip, $HUGE, scope: global }"
conf sync-a "{ key: ip, $HUGE, scope: global, sync: 50ms }"
conf sync-b "{ key: ip, $HUGE, scope: global, sync: 50ms }"
conf local-429 "{ key: ip, rate: 100/s }"
conf strict-429 "{ key: ip, rate: 100/s, scope: global }"
for name in "${!PORT[@]}"; do
  if ! "$BIN" validate --config "$RUN/$name.yaml" >"$RUN/$name.validate" 2>&1; then
    echo "config $name is invalid (is $BIN older than the sources? rebuild it):" >&2
    cat "$RUN/$name.validate" >&2; exit 1
  fi
done
wait_port "$BACKEND"; wait_port "$REDIS"
for name in "${!PORT[@]}"; do
  "$BIN" run -c "$RUN/$name.yaml" 2>"$RUN/$name.err" &
  PIDS+=($!)
done
for name in "${!PORT[@]}"; do wait_port "${PORT[$name]}"; done

# --- sanity: every instance answers 200 through the backend, limited ones with RateLimit-*
for name in "${!PORT[@]}"; do
  hdrs=$(curl -s -m 5 -D - -o /dev/null "http://127.0.0.1:${PORT[$name]}/") || true
  code=$(awk 'NR==1{print $2}' <<<"$hdrs")
  [ "$code" = 200 ] || { echo "$name: GET / answered '${code:-nothing}'" >&2; cat "$RUN/$name.err" >&2; exit 1; }
  if [[ "$name" != none* ]] && ! grep -qi '^ratelimit-limit:' <<<"$hdrs"; then
    echo "$name: no RateLimit-Limit header: the limit is not applied" >&2; exit 1
  fi
done

# --- measurement
# CASES: name:instance[,instance]. Single-instance cases use wrk -t2 -c$CONNS; two-instance
# cases one wrk -t1 -c$((CONNS/2)) per instance, at the same time, req/s summed.
CASES=(none:none local:local strict:strict "2x-none:none,none-b" "2x-sync50ms:sync-a,sync-b"
       local-429:local-429 strict-429:strict-429)
declare -A LABEL=(
  [none]="no limit (baseline)" [local]="local, never refuses" [strict]="global strict, never refuses"
  [2x-none]="2 instances, no limit" [2x-sync50ms]="2 instances, global sync 50ms, never refuses"
  [local-429]="local 100/s (refuses most)" [strict-429]="global strict 100/s (refuses most)")
redis_cmds() {  # script calls Redis has served so far: one round trip each. (commandstats also
  # counts the TIME/GET/SET a script runs inside, so all commands would be 3-4 per decision.)
  timeout 5 redis-cli -p "$REDIS" info commandstats |
    awk -F'[:=,]' '/^cmdstat_(evalsha|eval|fcall|fcall_ro):/ { s += $3 } END { print s + 0 }'
}
wrk_run() {  # wrk_run PORT THREADS CONNS SECONDS OUTFILE
  timeout -k 5 $(($4 + 30)) wrk -t"$2" -c"$3" -d"$4"s --timeout 2s --latency \
    "http://127.0.0.1:$1/" >"$5" 2>&1
}
run_case() {  # run_case CASE SECONDS TAG -> appends "rps p50 p99 reqs non2xx sockerr redis" to $RUN/res-CASE
  local c=${1%%:*} insts=${1#*:} secs=$2 tag=$3 before after
  IFS=, read -r -a inst <<<"$insts"
  before=$(redis_cmds)
  if [ "${#inst[@]}" = 1 ]; then
    wrk_run "${PORT[${inst[0]}]}" 2 "$CONNS" "$secs" "$RUN/out/$tag-$c.txt"
    read -r rps p50 p99 reqs bad se < <(wrk_parse "$RUN/out/$tag-$c.txt")
  else
    local pids=() i
    for i in "${!inst[@]}"; do
      wrk_run "${PORT[${inst[$i]}]}" 1 $((CONNS / 2)) "$secs" "$RUN/out/$tag-$c.$i.txt" &
      pids+=($!); EXTRA_PIDS+=($!)
    done
    for i in "${pids[@]}"; do wait "$i"; done
    EXTRA_PIDS=()
    read -r rps p50 p99 reqs bad se < <(
      for i in "${!inst[@]}"; do wrk_parse "$RUN/out/$tag-$c.$i.txt"; done |
        awk '{ r += $1; if ($2 > a) a = $2; if ($3 > b) b = $3; n += $4; x += $5; s += $6 }
             END { printf "%s %s %s %d %d %d\n", r, a, b, n, x, s }')
  fi
  after=$(redis_cmds)
  [ "$reqs" -gt 0 ] || { echo "$c: wrk made no requests" >&2; cat "$RUN/out/$tag-$c"*.txt >&2; exit 1; }
  RES="$rps $p50 $p99 $reqs $bad $se $((after - before))"
}

echo "== rate limit cost: ROUNDS=$ROUNDS DUR=${DUR}s CONNS=$CONNS WORKERS=$WORKERS redis timeout $REDIS_TIMEOUT"
echo "   binary $BIN ($(date -r "$BIN" '+%F %T'))"
for cs in "${CASES[@]}"; do run_case "$cs" 1 warmup; done  # also drains the 100/s buckets
for name in local-429 strict-429; do  # 300 requests on one connection: beyond the burst of 100
  args=(); for _ in $(seq 300); do args+=(-o /dev/null "http://127.0.0.1:${PORT[$name]}/"); done
  codes=$(curl -s -m 10 -w '%{http_code}\n' "${args[@]}" | sort | uniq -c | xargs)
  [[ "$codes" == *" 429"* ]] || { echo "$name: no 429 in 300 requests ($codes)" >&2; exit 1; }
done
[ -n "$(timeout 5 redis-cli -p "$REDIS" --scan --pattern 'sluice:rl:*' | head -1)" ] ||
  { echo "no sluice:rl:* key in Redis after the warm-up: global limits did not reach it" >&2; exit 1; }

for r in $(seq "$ROUNDS"); do
  for cs in "${CASES[@]}"; do
    c=${cs%%:*}
    run_case "$cs" "$DUR" "$r"
    echo "$RES" >>"$RUN/res-$c"
    read -r rps p50 p99 reqs bad se rc <<<"$RES"
    awk -v r="$r" -v c="$c" -v rps="$rps" -v p50="$p50" -v p99="$p99" -v n="$reqs" -v bad="$bad" \
        -v se="$se" -v rc="$rc" 'BEGIN {
      printf "round %s %-12s %8.0f req/s  p50 %6.2f ms  p99 %6.2f ms  non-2xx %5.1f%%  redis %.4f calls/req%s\n",
        r, c, rps, p50, p99, 100 * bad / n, rc / n, (se ? "  socket errors " se : "") }'
  done
done

# --- summary: medians per case (req/s, p50, p99; non-2xx share and Redis commands per request
# over all rounds); ratios of the req/s medians
base1=$(median_col "$RUN/res-none" 1); base2=$(median_col "$RUN/res-2x-none" 1)
echo
echo "median of $ROUNDS rounds, wrk ${DUR}s, $CONNS connections in total, $WORKERS worker(s) per sluice"
echo
echo "| case | req/s | vs baseline (1 instance, no limit) | vs same instances, no limit | p50 ms | p99 ms | non-2xx (429) | redis calls/req |"
echo "|---|---|---|---|---|---|---|---|"
warn=()
for cs in "${CASES[@]}"; do
  c=${cs%%:*}; f="$RUN/res-$c"
  rps=$(median_col "$f" 1); p50=$(median_col "$f" 2); p99=$(median_col "$f" 3)
  read -r n bad se rc < <(awk '{ n += $4; b += $5; s += $6; r += $7 } END { print n, b, s, r }' "$f")
  ref=$base1; [[ "$c" == 2x-* ]] && ref=$base2
  awk -v l="${LABEL[$c]}" -v rps="$rps" -v b1="$base1" -v ref="$ref" -v p50="$p50" -v p99="$p99" \
      -v n="$n" -v bad="$bad" -v rc="$rc" 'BEGIN {
    printf "| %s | %.0f | %.2f | %.2f | %.2f | %.2f | %.1f%% | %.4f |\n",
      l, rps, rps / b1, rps / ref, p50, p99, 100 * bad / n, rc / n }'
  [[ "$c" != *-429 && "$bad" -gt 0 ]] && warn+=("$c: $bad non-2xx answers although the limit never refuses")
  [ "$se" -gt 0 ] && warn+=("$c: $se socket errors")
done
for name in "${!PORT[@]}"; do
  n=$(grep -ci 'redis' "$RUN/$name.err" || true)
  [ "$n" -gt 0 ] && warn+=("$name: $n error-log lines mention redis, e.g. $(grep -i -m1 redis "$RUN/$name.err")")
done
if [ "${#warn[@]}" -gt 0 ]; then echo; printf 'WARNING: %s\n' "${warn[@]}"; fi
exit 0
