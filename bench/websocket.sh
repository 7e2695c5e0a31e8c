#!/usr/bin/env bash
# WebSocket echo round trip through a proxy vs direct: a python3-websockets echo server on
# 127.0.0.1:9351; sluice (route `websocket: true`), nginx (proxy_http_version 1.1 + Upgrade) and
# haproxy (mode http) in front of it. The client (bench/ws_echo.py, python3-websockets) sends one
# message, waits for its echo, repeats: per case, ROUNDS interleaved rounds of CONNS connections x
# MSGS messages of SIZE bytes -> p50/p90/p99 round trip (us) and messages/s; medians over rounds.
# The client is Python: its own cost is in every figure, so read the difference to "direct".
# Ports 9351-9354, loopback only, bounded in time; every process it starts is stopped by PID.
#   bench/websocket.sh          ROUNDS=3 MSGS=2000 SIZE=256 CONNS=1 KEEP=0 BIN=build/release/sluice
set -Eeuo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
ROUNDS=${ROUNDS:-3}; MSGS=${MSGS:-2000}; SIZE=${SIZE:-256}; CONNS=${CONNS:-1}; KEEP=${KEEP:-0}
BIN=${BIN:-$PWD/build/release/sluice}
PY=/usr/bin/python3
[ -x "$BIN" ] || { echo "build the release binary first: make release" >&2; exit 1; }
for tool in nginx haproxy ss timeout; do
  command -v "$tool" >/dev/null || { echo "needs $tool" >&2; exit 1; }
done
$PY -c 'import websockets' 2>/dev/null || { echo "needs python3-websockets (scripts/deps.sh)" >&2; exit 1; }
P_ECHO=9351 P_SLUICE=9352 P_NGINX=9353 P_HAPROXY=9354
CASES=(direct sluice nginx haproxy)
declare -A PORT=([direct]=$P_ECHO [sluice]=$P_SLUICE [nginx]=$P_NGINX [haproxy]=$P_HAPROXY)
ports_free $P_ECHO $P_SLUICE $P_NGINX $P_HAPROXY

RUN=$(mktemp -d /tmp/sluice-ws.XXXXXX)
mkdir -p "$RUN/tmp"
PIDS=()
EXTRA_PIDS=(); trap bench_cleanup EXIT

$PY bench/ws_echo.py server $P_ECHO 2>"$RUN/echo.err" &
PIDS+=($!)

cat >"$RUN/sluice.yaml" <<YAML
listen: 127.0.0.1:$P_SLUICE
workers: 1
log: { access: off, error: stderr }
upstreams:
  echo: [127.0.0.1:$P_ECHO]
routes:
  - { match: { path: / }, upstream: echo, websocket: true }
YAML
"$BIN" run -c "$RUN/sluice.yaml" 2>"$RUN/sluice.err" &
PIDS+=($!)

cat >"$RUN/nginx.conf" <<NGINX
worker_processes 1;
master_process off;
pid nginx.pid;
error_log nginx.error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path tmp/body; proxy_temp_path tmp/proxy; fastcgi_temp_path tmp/fastcgi;
  uwsgi_temp_path tmp/uwsgi; scgi_temp_path tmp/scgi;
  upstream echo { server 127.0.0.1:$P_ECHO; }
  server {
    listen 127.0.0.1:$P_NGINX;
    location / {
      proxy_pass http://echo;
      proxy_http_version 1.1;
      proxy_set_header Upgrade \$http_upgrade;
      proxy_set_header Connection "upgrade";
      proxy_read_timeout 60s;
    }
  }
}
NGINX
nginx -p "$RUN/" -c "$RUN/nginx.conf" -g 'daemon off;' >"$RUN/nginx.out" 2>&1 &
PIDS+=($!)

cat >"$RUN/haproxy.cfg" <<HAPROXY
global
  nbthread 1
defaults
  mode http
  timeout connect 2s
  timeout client 60s
  timeout server 60s
  timeout tunnel 60s
frontend f
  bind 127.0.0.1:$P_HAPROXY
  default_backend b
backend b
  server s1 127.0.0.1:$P_ECHO
HAPROXY
haproxy -f "$RUN/haproxy.cfg" -db >"$RUN/haproxy.out" 2>&1 &
PIDS+=($!)

for p in $P_ECHO $P_SLUICE $P_NGINX $P_HAPROXY; do wait_port "$p"; done

echo "== WebSocket echo round trip: ROUNDS=$ROUNDS MSGS=$MSGS SIZE=$SIZE CONNS=$CONNS"
echo "   sluice $BIN ($(date -r "$BIN" '+%F %T')), nginx $(nginx -v 2>&1 | sed 's/.*\///'), haproxy $(haproxy -v | head -1 | awk '{print $3}')"
for r in $(seq "$ROUNDS"); do
  for c in "${CASES[@]}"; do
    out=$(timeout 120 $PY bench/ws_echo.py client "ws://127.0.0.1:${PORT[$c]}/" "$MSGS" "$SIZE" "$CONNS")
    echo "$out" >>"$RUN/res-$c"
    printf "round %s %-8s p50 %6s us  p90 %6s us  p99 %6s us  %6s msg/s\n" "$r" "$c" $out
  done
done

echo
echo "| path | p50 us | p90 us | p99 us | msg/s | p50 added vs direct (us) |"
echo "|---|---|---|---|---|---|"
d50=$(median_col "$RUN/res-direct" 1)
for c in "${CASES[@]}"; do
  f="$RUN/res-$c"
  p50=$(median_col "$f" 1); p90=$(median_col "$f" 2); p99=$(median_col "$f" 3); mps=$(median_col "$f" 4)
  echo "| $c | $p50 | $p90 | $p99 | $mps | $((p50 - d50)) |"
done
