#!/usr/bin/env bash
# Balancing modes and failover: sluice vs nginx vs haproxy over three separate nginx backends.
#   1. req/s and latency for round robin, least-loaded (sluice p2c / nginx least_conn /
#      haproxy leastconn) and consistent hashing on a header (sluice maglev / nginx hash
#      consistent / haproxy hdr + consistent), ROUNDS interleaved rounds of DUR s each;
#   2. failover: a steady wrk load on each proxy's round-robin front while backend 3 is killed
#      (SIGKILL) KILL_AT s into the run; reports failed requests (socket errors + non-2xx).
# Loopback only, bounded, and every process it starts is stopped by PID.
#   bench/balancers.sh                 ROUNDS=3 DUR=5 CONNS=64 KILL_AT=3 KILL_DUR=8
set -Eeuo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}; DUR=${DUR:-5}; CONNS=${CONNS:-64}; KILL_AT=${KILL_AT:-3}; KILL_DUR=${KILL_DUR:-8}
HARNESS=${HARNESS:-$(cd .. && pwd)/shared/bench}
BIN=${BIN:-$PWD/build/release/sluice}
RUN=${BENCH_RUN:-/tmp/sluice-balancers}
OUT=$RUN/out-$(date +%Y%m%d-%H%M%S)
mkdir -p "$RUN/tmp" "$OUT"
[ -x "$BIN" ] || { echo "build the release binary first: make release" >&2; exit 1; }
for p in 9301 9302 9303 9311 9312 9313 9321 9322 9323 9331 9332 9333; do
  if ss -Hltn "sport = :$p" | grep -q .; then echo "port $p busy" >&2; exit 1; fi
done

PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

start_backend() {  # start_backend PORT -> pid in BACKEND_PID[PORT]
  sed "s/@PORT@/$1/g" bench/peers/backend.conf.in >"$RUN/backend-$1.conf"
  nginx -p "$RUN/" -c "$RUN/backend-$1.conf" -g 'daemon off;' >"$RUN/backend-$1.out" 2>&1 &
  BACKEND_PID[$1]=$!; PIDS+=($!)
}
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 not up" >&2; return 1; }

declare -A BACKEND_PID
for p in 9301 9302 9303; do start_backend $p; done
nginx -p "$RUN/" -c "$PWD/bench/peers/nginx-balancers.conf" -g 'daemon off;' >"$RUN/nginx.out" 2>&1 &
PIDS+=($!)
haproxy -f bench/peers/haproxy-balancers.cfg >"$RUN/haproxy.out" 2>&1 &
PIDS+=($!)
for m in rr p2c maglev; do
  "$BIN" run -c "bench/sluice-$m.yaml" 2>"$RUN/sluice-$m.err" &
  PIDS+=($!)
done
for p in 9301 9302 9303 9311 9312 9313 9321 9322 9323 9331 9332 9333; do wait_port $p; done
sleep 2.5  # let sluice's and haproxy's first health checks pass

declare -A URL=(
  [nginx-rr]=9311 [haproxy-rr]=9321 [sluice-rr]=9331
  [nginx-least]=9312 [haproxy-least]=9322 [sluice-p2c]=9332
  [nginx-hash]=9313 [haproxy-hash]=9323 [sluice-maglev]=9333)
wrk_one() {  # wrk_one NAME SECONDS [lua] > file
  local script=()
  [ "${3:-}" = lua ] && script=(-s bench/wrk-users.lua)
  wrk -t1 -c"$CONNS" -d"$2"s --timeout 2s --latency "${script[@]}" "http://127.0.0.1:${URL[$1]}/"
}

echo "== throughput: ROUNDS=$ROUNDS DUR=${DUR}s CONNS=$CONNS -> $OUT"
for group in "rr:nginx-rr haproxy-rr sluice-rr:" "least:nginx-least haproxy-least sluice-p2c:" "hash:nginx-hash haproxy-hash sluice-maglev:lua"; do
  IFS=: read -r gname targets lua <<<"$group"
  mkdir -p "$OUT/$gname"
  for t in $targets; do wrk_one "$t" 1 "$lua" >/dev/null; done   # warm-up
  for r in $(seq "$ROUNDS"); do
    for t in $targets; do
      wrk_one "$t" "$DUR" "$lua" >"$OUT/$gname/$r-$t.txt"
      echo "round $r $t: $(grep Requests/sec "$OUT/$gname/$r-$t.txt")"
    done
  done
  # shellcheck disable=SC2086
  /usr/bin/python3 "$HARNESS/summarize.py" "$OUT/$gname" $targets | tee "$OUT/$gname/summary.md"
done

echo "== failover: backend 9303 killed ${KILL_AT}s into a ${KILL_DUR}s run"
echo "| proxy | requests | failed (socket errors + non-2xx) | failed % |"
echo "|---|---|---|---|"
for t in nginx-rr haproxy-rr sluice-rr; do
  wrk_one "$t" "$KILL_DUR" >"$OUT/kill-$t.txt" &
  wrk_pid=$!
  sleep "$KILL_AT"
  kill -KILL "${BACKEND_PID[9303]}"
  wait "${BACKEND_PID[9303]}" 2>/dev/null || true
  wait "$wrk_pid" || true
  reqs=$(awk '/requests in/{print $1}' "$OUT/kill-$t.txt")
  sock=$({ grep -oE 'Socket errors: connect [0-9]+, read [0-9]+, write [0-9]+, timeout [0-9]+' "$OUT/kill-$t.txt" || true; } | { grep -oE '[0-9]+' || true; } | awk '{ s += $1 } END { print s + 0 }')
  bad=$(grep -oE 'Non-2xx or 3xx responses: [0-9]+' "$OUT/kill-$t.txt" | grep -oE '[0-9]+$' || true)
  failed=$(( ${sock:-0} + ${bad:-0} ))
  awk -v t="$t" -v r="$reqs" -v f="$failed" 'BEGIN { printf "| %s | %d | %d | %.3f%% |\n", t, r, f, (r ? 100 * f / r : 0) }'
  start_backend 9303; wait_port 9303
  sleep 3  # let checks mark it up again before the next proxy's run
done
