# What every bench script needs; sourced after `cd` to the repository root:
#
#   . bench/lib.sh
#   ports_free 9601 9602
#   RUN=$(mktemp -d /tmp/sluice-NAME.XXXXXX); PIDS=(); EXTRA_PIDS=(); trap bench_cleanup EXIT
#   server ... & PIDS+=($!); wait_port 9601
#
# Processes are stopped by PID (never by name); loopback only.
# shellcheck shell=bash

# bench_stop PID...: SIGTERM, up to 5 s for a graceful stop, then SIGKILL what is left.
bench_stop() {
  local pid alive
  for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
  for _ in $(seq 50); do
    alive=0
    for pid in "$@"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for pid in "$@"; do kill -KILL "$pid" 2>/dev/null || true; done
}

# The EXIT trap: stops EXTRA_PIDS (load generators, scrapers) then PIDS (servers), and removes
# $RUN unless KEEP=1.
# shellcheck disable=SC2317  # invoked by the trap
bench_cleanup() {
  bench_stop "${EXTRA_PIDS[@]}"
  bench_stop "${PIDS[@]}"
  wait 2>/dev/null || true
  if [ "${KEEP:-0}" = 1 ]; then echo "scratch files kept in $RUN" >&2; else rm -rf "$RUN"; fi
}

# ports_free PORT...: exits when one of them is already listening.
ports_free() {
  local p
  for p in "$@"; do
    if ss -Hltn "sport = :$p" | grep -q .; then echo "port $p busy" >&2; exit 1; fi
  done
}

# wait_port PORT: until 127.0.0.1:PORT accepts a connection (at most 5 s).
wait_port() {
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done
  echo "port $1 not up" >&2
  return 1
}

# median_col FILE COLUMN: the median of a whitespace-separated column (the upper one of two).
median_col() {
  awk -v k="$2" '{ print $k }' "$1" | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'
}

# parse WRK_OUTPUT (wrk --latency) -> "rps p50_ms p99_ms requests non2xx socket_errors"
wrk_parse() {
  awk 'function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0
                        if (v ~ /s$/) return v * 1000; return v + 0 }
       /Requests\/sec/ { rps = $2 }
       /^ +50%/ { p50 = ms($2) }
       /^ +99%/ { p99 = ms($2) }
       / requests in / { reqs = $1 }
       /Non-2xx or 3xx responses:/ { bad = $NF }
       /Socket errors:/ { for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+,?$/) se += $i }
       END { printf "%s %s %s %d %d %d\n", rps + 0, p50 + 0, p99 + 0, reqs, bad, se }' "$1"
}
