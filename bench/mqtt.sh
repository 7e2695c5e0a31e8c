#!/usr/bin/env bash
# MQTT PUBLISH -> HTTP, end to end: PUBS parallel `mosquitto_pub -l` publishers (one connection
# each, MSGS messages of SIZE bytes, one per stdin line) through a sluice `protocol: mqtt`
# listener to one nginx backend answering 200 to every POST (bench/peers/backend.conf.in).
# QoS 1 messages are acknowledged only after the backend's 2xx, so a QoS 1 run measures the
# whole round trip (mosquitto_pub keeps up to 20 messages in flight per connection by default);
# QoS 0 measures how fast the gateway forwards what it is sent. Per QoS, ROUNDS rounds -> the
# median of messages/s (all publishers' messages / wall time until the backend has received them
# all), and the backend's request count is checked against what was sent.
# Ports 9361-9362, loopback only, bounded in time; every process it starts is stopped by PID.
#   bench/mqtt.sh          ROUNDS=3 MSGS=20000 SIZE=64 PUBS=4 WORKERS=1 KEEP=0 BIN=build/release/sluice
set -Eeuo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
ROUNDS=${ROUNDS:-3}; MSGS=${MSGS:-20000}; SIZE=${SIZE:-64}; PUBS=${PUBS:-4}; WORKERS=${WORKERS:-1}
KEEP=${KEEP:-0}
BIN=${BIN:-$PWD/build/release/sluice}
[ -x "$BIN" ] || { echo "build the release binary first: make release" >&2; exit 1; }
for tool in nginx mosquitto_pub ss timeout; do
  command -v "$tool" >/dev/null || { echo "needs $tool (scripts/deps.sh)" >&2; exit 1; }
done
P_BACKEND=9361 P_MQTT=9362
ports_free $P_BACKEND $P_MQTT
RUN=$(mktemp -d /tmp/sluice-mqtt.XXXXXX)
mkdir -p "$RUN/tmp"
PIDS=()
EXTRA_PIDS=(); trap bench_cleanup EXIT

# The backend counts requests in its access log (one short line each).
sed "s/@PORT@/$P_BACKEND/g; s#access_log off;#access_log $RUN/backend.access.log;#" \
  bench/peers/backend.conf.in >"$RUN/backend.conf"
nginx -p "$RUN/" -c "$RUN/backend.conf" -g 'daemon off;' >"$RUN/backend.out" 2>&1 &
PIDS+=($!)
cat >"$RUN/sluice.yaml" <<YAML
listeners:
  - { name: iot, listen: 127.0.0.1:$P_MQTT, protocol: mqtt }
workers: $WORKERS
log: { access: off, error: stderr }
upstreams:
  telemetry: [127.0.0.1:$P_BACKEND]
mqtt:
  routes:
    - { topic: devices/+/telemetry, upstream: telemetry, path: "/ingest/{1}" }
YAML
"$BIN" run -c "$RUN/sluice.yaml" 2>"$RUN/sluice.err" &
PIDS+=($!)
wait_port $P_BACKEND
wait_port $P_MQTT

payload=$(head -c "$SIZE" /dev/zero | tr '\0' 'x')
for i in $(seq "$MSGS"); do echo "$payload"; done >"$RUN/lines"
backend_count() { wc -l <"$RUN/backend.access.log"; }

echo "== MQTT PUBLISH -> HTTP: ROUNDS=$ROUNDS MSGS=$MSGS x PUBS=$PUBS SIZE=$SIZE WORKERS=$WORKERS"
echo "   sluice $BIN ($(date -r "$BIN" '+%F %T'))"
for r in $(seq "$ROUNDS"); do
  for q in 0 1; do
    before=$(backend_count)
    t0=$(date +%s%N)
    pids=()
    for p in $(seq "$PUBS"); do
      timeout 120 mosquitto_pub -h 127.0.0.1 -p $P_MQTT -i "bench-$q-$p" -t "devices/d$p/telemetry" \
        -q "$q" -l <"$RUN/lines" &
      pids+=($!)
    done
    fail=0
    for pid in "${pids[@]}"; do wait "$pid" || fail=1; done
    sent=$((MSGS * PUBS))
    # QoS 0 publishers finish long before the gateway has forwarded everything (it reads at the
    # pace it forwards, so nothing is dropped): the clock stops when the backend has them all
    # (or nothing more arrived for 2 s). QoS 1 publishers end after the last PUBACK.
    last=-1; still=0
    while :; do
      got=$(($(backend_count) - before))
      [ "$got" -ge "$sent" ] && break
      if [ "$got" = "$last" ]; then still=$((still + 1)); [ "$still" -ge 40 ] && break; else still=0; fi
      last=$got; sleep 0.05
    done
    ns=$(($(date +%s%N) - t0))
    [ "$got" -lt "$sent" ] && ns=$((ns - 2000000000))
    mps=$(awk -v n="$sent" -v ns="$ns" 'BEGIN { printf "%.0f", n / (ns / 1e9) }')
    echo "$mps $got $sent $fail" >>"$RUN/res-q$q"
    printf "round %s QoS %s  %7s msg/s  backend got %s of %s%s\n" "$r" "$q" "$mps" "$got" "$sent" \
      "$([ "$fail" = 1 ] && echo '  (a publisher failed)')"
  done
done
echo
echo "| QoS | messages/s (median) | delivered to the backend (all rounds) |"
echo "|---|---|---|"
for q in 0 1; do
  tot=$(awk '{ g += $2; s += $3 } END { printf "%d of %d", g, s }' "$RUN/res-q$q")
  echo "| $q | $(median_col "$RUN/res-q$q" 1) | $tot |"
done
