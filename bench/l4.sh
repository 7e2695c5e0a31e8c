#!/usr/bin/env bash
# L4 (TCP) load balancing: sluice `protocol: tcp` vs haproxy `mode tcp`, both one thread.
#  1. Throughput: iperf3 (one stream, DUR seconds) directly to iperf3 -s, through sluice, through
#     haproxy; ROUNDS interleaved rounds -> the median Gbit/s (receiver side).
#  2. Short connections: wrk with "Connection: close" (every request a new TCP connection through
#     the proxy, so this is connections/s) against one nginx backend (bench/peers/backend.conf.in)
#     directly, through sluice and through haproxy; ROUNDS rounds -> the median.
# sluice: `workers: 1`, access log off; haproxy: `nbthread 1`. Ports 9371-9377, loopback only,
# bounded in time; every process it starts is stopped by PID.
#   bench/l4.sh         ROUNDS=5 DUR=5 CONNS=32 KEEP=0 BIN=build/release/sluice
set -Eeuo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
ROUNDS=${ROUNDS:-5}; DUR=${DUR:-5}; CONNS=${CONNS:-32}; KEEP=${KEEP:-0}
BIN=${BIN:-$PWD/build/release/sluice}
[ -x "$BIN" ] || { echo "build the release binary first: make release" >&2; exit 1; }
for tool in iperf3 wrk nginx haproxy ss timeout python3; do
  command -v "$tool" >/dev/null || { echo "needs $tool (scripts/deps.sh)" >&2; exit 1; }
done
P_IPERF=9371 P_SL_IPERF=9372 P_HA_IPERF=9373 P_BACKEND=9374 P_SL_HTTP=9375 P_HA_HTTP=9376
ports_free $P_IPERF $P_SL_IPERF $P_HA_IPERF $P_BACKEND $P_SL_HTTP $P_HA_HTTP
RUN=$(mktemp -d /tmp/sluice-l4.XXXXXX)
mkdir -p "$RUN/tmp"
PIDS=()
EXTRA_PIDS=(); trap bench_cleanup EXIT

iperf3 -s -B 127.0.0.1 -p $P_IPERF >"$RUN/iperf3-server.out" 2>&1 &
PIDS+=($!)
sed "s/@PORT@/$P_BACKEND/g" bench/peers/backend.conf.in >"$RUN/backend.conf"
nginx -p "$RUN/" -c "$RUN/backend.conf" -g 'daemon off;' >"$RUN/backend.out" 2>&1 &
PIDS+=($!)
cat >"$RUN/sluice.yaml" <<YAML
workers: 1
shutdown_timeout: 2s
log: { access: off, error: stderr }
listeners:
  - { name: iperf, listen: 127.0.0.1:$P_SL_IPERF, protocol: tcp, upstream: iperf }
  - { name: http, listen: 127.0.0.1:$P_SL_HTTP, protocol: tcp, upstream: web }
upstreams:
  iperf: { targets: [127.0.0.1:$P_IPERF], max_connections: 100000 }
  web: { targets: [127.0.0.1:$P_BACKEND], max_connections: 100000 }
YAML
"$BIN" run -c "$RUN/sluice.yaml" 2>"$RUN/sluice.err" &
PIDS+=($!)
cat >"$RUN/haproxy.cfg" <<HAPROXY
global
  nbthread 1
  maxconn 8000
defaults
  mode tcp
  timeout connect 2s
  timeout client 60s
  timeout server 60s
listen iperf
  bind 127.0.0.1:$P_HA_IPERF
  server s1 127.0.0.1:$P_IPERF
listen http
  bind 127.0.0.1:$P_HA_HTTP
  server s1 127.0.0.1:$P_BACKEND
HAPROXY
haproxy -f "$RUN/haproxy.cfg" -db >"$RUN/haproxy.out" 2>&1 &
PIDS+=($!)
for p in $P_IPERF $P_BACKEND $P_SL_IPERF $P_HA_IPERF $P_SL_HTTP $P_HA_HTTP; do wait_port "$p"; done

CASES=(direct sluice haproxy)
declare -A IPERF=([direct]=$P_IPERF [sluice]=$P_SL_IPERF [haproxy]=$P_HA_IPERF)
declare -A HTTP=([direct]=$P_BACKEND [sluice]=$P_SL_HTTP [haproxy]=$P_HA_HTTP)
gbits() {  # iperf3 -J output -> receiver Gbit/s
  python3 -c 'import json,sys; print("%.2f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"] / 1e9))'
}

echo "== L4 TCP: ROUNDS=$ROUNDS DUR=${DUR}s CONNS=$CONNS"
echo "   sluice $BIN ($(date -r "$BIN" '+%F %T')), haproxy $(haproxy -v | head -1 | awk '{print $3}'), $(iperf3 --version | head -1 | awk '{print $1, $2}')"
for r in $(seq "$ROUNDS"); do
  for c in "${CASES[@]}"; do
    g=$(timeout $((DUR + 20)) iperf3 -c 127.0.0.1 -p "${IPERF[$c]}" -t "$DUR" -J | gbits)
    echo "$g" >>"$RUN/iperf-$c"
    printf "round %s %-8s iperf3 %6s Gbit/s\n" "$r" "$c" "$g"
  done
  for c in "${CASES[@]}"; do
    timeout $((DUR + 20)) wrk -t1 -c"$CONNS" -d"${DUR}s" --latency -H "Connection: close" \
      "http://127.0.0.1:${HTTP[$c]}/" >"$RUN/wrk-$c-$r.txt"
    read -r rps p50 p99 reqs bad se < <(wrk_parse "$RUN/wrk-$c-$r.txt")
    echo "$rps $p50 $p99 $bad $se" >>"$RUN/conn-$c"
    printf "round %s %-8s %8s conn/s  p50 %6s ms  p99 %6s ms  non-2xx %s  socket errors %s\n" \
      "$r" "$c" "$rps" "$p50" "$p99" "$bad" "$se"
  done
done

echo
echo "| path | iperf3 Gbit/s (median) | vs direct | short connections/s (median) | p50 ms | p99 ms | vs direct |"
echo "|---|---|---|---|---|---|---|"
dg=$(median_col "$RUN/iperf-direct" 1); dc=$(median_col "$RUN/conn-direct" 1)
for c in "${CASES[@]}"; do
  g=$(median_col "$RUN/iperf-$c" 1); cps=$(median_col "$RUN/conn-$c" 1)
  p50=$(median_col "$RUN/conn-$c" 2); p99=$(median_col "$RUN/conn-$c" 3)
  echo "| $c | $g | $(awk -v a="$g" -v b="$dg" 'BEGIN { printf "%.2f", a / b }') | $cps | $p50 | $p99 | $(awk -v a="$cps" -v b="$dc" 'BEGIN { printf "%.2f", a / b }') |"
done
