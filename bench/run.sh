#!/usr/bin/env bash
# sluice vs nginx vs haproxy with the shared harness (../shared/bench or $HARNESS): builds the
# release binary's config, starts sluice (pinned like the peers when PIN=1), runs the comparison and the idle
# keep-alive memory probe, then stops what it started (by PID).
#   bench/run.sh              # full run (about 3 min)
#   ROUNDS=3 DUR=5 bench/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."
HARNESS=${HARNESS:-$(cd .. && pwd)/shared/bench}
[ -x "$HARNESS/run.sh" ] || { echo "bench harness not found at $HARNESS" >&2; exit 1; }
BIN=${BIN:-$PWD/build/release/sluice}
[ -x "$BIN" ] || { echo "build the release binary first: make release" >&2; exit 1; }

"$BIN" validate -c bench/sluice-bench.yaml >/dev/null
PIN=${PIN:-0}
if [ "$PIN" = 1 ]; then SRV="taskset -c 0"; else SRV=""; fi
$SRV "$BIN" run -c bench/sluice-bench.yaml 2>/tmp/sluice-bench.err &
PID=$!
trap 'kill -TERM $PID 2>/dev/null; wait $PID 2>/dev/null || true' EXIT
for _ in $(seq 50); do
  (exec 3<>/dev/tcp/127.0.0.1/9203) 2>/dev/null && break
  sleep 0.1
done

GATEWAY_URL=http://127.0.0.1:9203/ GATEWAY_PID=$PID PIN=$PIN "$HARNESS/run.sh"
GATEWAY_PORT=9203 GATEWAY_PID=$PID "$HARNESS/conns.sh" || true
