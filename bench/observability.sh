#!/usr/bin/env bash
# Cost of observability: requests/s of one sluice route proxying to one nginx backend with
#   off       `log: { access: off }` and no `admin` (no metrics, rates or top clients collected);
#   on        `log: { access: FILE, access_format: json }` and `admin: { listen }` (metrics, rates,
#             top clients collected), while a background loop scrapes /metrics and /api/stats once
#             a second, as Prometheus and the dashboard would;
#   on-comb   the same with `access_format: combined`.
# wrk keep-alive -t2 -c$CONNS --latency, ROUNDS interleaved rounds of DUR s (the order of the cases
# rotates from round to round), medians, ratio to "off", p50/p99. After each "on" run the access
# log must hold as many new lines as wrk reported requests (up to $CONNS more: requests in flight
# when wrk stopped are answered and logged but not counted by wrk); fewer lines are reported
# together with what the error log says about dropped lines. Also reported: access log bytes per
# request, scrapes answered and their latency, and at the end whether `sluice_requests_total`
# matches the lines in the access log. The log file is fsynced after each run, outside the timed
# window, so the kernel's writeback of one run is not charged to a later run of another case.
# One nginx backend (bench/peers/backend.conf.in), sluice `workers: $WORKERS` per instance.
# Loopback only, ports 9601-9615, bounded in time, every process it starts is stopped by PID.
# Also reported: the sluice process's CPU time per request (all threads, from /proc, including the
# log writer's work for that run), which a noisy shared machine disturbs much less than req/s.
#   bench/observability.sh      ROUNDS=5 DUR=5 CONNS=50 WORKERS=1 KEEP=0 WARM_MB=4096
#                               BIN=build/release/sluice (KEEP=1 keeps the scratch dir: logs, wrk output)
set -Eeuo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
ROUNDS=${ROUNDS:-5}; DUR=${DUR:-5}; CONNS=${CONNS:-50}; WORKERS=${WORKERS:-1}; KEEP=${KEEP:-0}
WARM_MB=${WARM_MB:-4096}
BIN=${BIN:-$PWD/build/release/sluice}
[ -x "$BIN" ] || { echo "build the release binary first: make release" >&2; exit 1; }
for tool in nginx wrk curl ss; do
  command -v "$tool" >/dev/null || { echo "needs $tool" >&2; exit 1; }
done

BACKEND=9601
CASES=(off on on-comb)
declare -A PORT=([off]=9611 [on]=9612 [on-comb]=9614)
declare -A ADMIN=([on]=9613 [on-comb]=9615)
declare -A FORMAT=([on]=json [on-comb]=combined)
declare -A LABEL=(
  [off]="off: access log off, no admin"
  [on]="on: json access log + admin, scraped 1/s"
  [on-comb]="on: combined access log + admin, scraped 1/s")
ports_free $BACKEND "${PORT[@]}" "${ADMIN[@]}"

RUN=$(mktemp -d /tmp/sluice-observability.XXXXXX)
mkdir -p "$RUN/tmp" "$RUN/out"
PIDS=(); EXTRA_PIDS=()  # servers; EXTRA_PIDS: the scrape loop of the run in progress
trap bench_cleanup EXIT

# --- guest memory. On some VMs (Firecracker here) the host backs guest RAM lazily: the first write
# into a page the guest has never used costs ~20x a later one (dd of 500 MiB into a new file:
# 333 MB/s on first touch, 5-8 GB/s once the pages have been used). The access log's page cache
# grows by ~1 GB per run and would pay that on every new page, charging the hypervisor to the log
# (it shows as copy_folio_from_iter_atomic in the writer thread). A process first fills WARM_MB of
# memory and exits, so the log's page cache reuses backed pages, as on a host whose memory has been
# in use for a while (anonymous memory, not a file: no dirty pages left for writeback to flush
# during the rounds). WARM_MB=0 measures cold memory.
if [ "$WARM_MB" -gt 0 ]; then
  t0=$(date +%s%N)
  /usr/bin/python3 -c "import sys; b = bytearray(b'\x01') * (int(sys.argv[1]) << 20)" "$WARM_MB"
  echo "   warmed $WARM_MB MiB of guest memory at $(awk -v mb="$WARM_MB" -v ns="$(($(date +%s%N) - t0))" 'BEGIN { printf "%.0f", mb / (ns / 1e9) }') MiB/s"
fi

# --- backend
sed "s/@PORT@/$BACKEND/g" bench/peers/backend.conf.in >"$RUN/backend.conf"
nginx -p "$RUN/" -c "$RUN/backend.conf" -g 'daemon off;' >"$RUN/backend.out" 2>&1 &
PIDS+=($!)

# --- sluice instances: conf NAME
conf() {
  local log="log: { access: off, error: stderr, level: info }" admin=""
  if [ -n "${ADMIN[$1]:-}" ]; then
    log="log: { access: $RUN/$1.access.log, access_format: ${FORMAT[$1]}, error: stderr, level: info }"
    admin="admin: { listen: 127.0.0.1:${ADMIN[$1]} }"
  fi
  cat >"$RUN/$1.yaml" <<YAML
listen: 127.0.0.1:${PORT[$1]}
workers: $WORKERS
shutdown_timeout: 2s
$log
$admin
upstreams:
  app: [127.0.0.1:$BACKEND]
routes:
  - { match: { path: / }, upstream: app }
YAML
}
for c in "${CASES[@]}"; do
  conf "$c"
  if ! "$BIN" validate --config "$RUN/$c.yaml" >"$RUN/$c.validate" 2>&1; then
    echo "config $c is invalid:" >&2; cat "$RUN/$c.validate" >&2
    if grep -q 'not supported in this version' "$RUN/$c.validate"; then
      echo "$BIN predates the admin API; rebuild it: flock /tmp/sluice-build.lock cmake --build build/release" >&2
    fi
    exit 1
  fi
done
wait_port "$BACKEND"
declare -A SPID=()
for c in "${CASES[@]}"; do
  "$BIN" run -c "$RUN/$c.yaml" 2>"$RUN/$c.err" &
  PIDS+=($!); SPID[$c]=$!
done
for c in "${CASES[@]}"; do
  wait_port "${PORT[$c]}"
  [ -n "${ADMIN[$c]:-}" ] && wait_port "${ADMIN[$c]}"
done

# --- sanity: every instance answers 200 through the backend; "on" ones log it and serve metrics
for c in "${CASES[@]}"; do
  code=$(curl -s -m 5 -o /dev/null -w '%{http_code}' "http://127.0.0.1:${PORT[$c]}/") || true
  [ "$code" = 200 ] || { echo "$c: GET / answered '${code:-nothing}'" >&2; cat "$RUN/$c.err" >&2; exit 1; }
  [ -n "${ADMIN[$c]:-}" ] || continue
  body=$(curl -s -m 5 "http://127.0.0.1:${ADMIN[$c]}/metrics") || true  # (no grep -q in a pipe:
  grep -q '^sluice_requests_total{' <<<"$body" ||                          #  SIGPIPE + pipefail)
    { echo "$c: /metrics has no sluice_requests_total: metrics are not collected" >&2; exit 1; }
  body=$(curl -s -m 5 "http://127.0.0.1:${ADMIN[$c]}/api/stats") || true
  grep -q '"rps"' <<<"$body" || { echo "$c: /api/stats has no rps" >&2; exit 1; }
done

# --- measurement
settle() {  # settle FILE: wait (at most 10 s) until the log thread has written what it was handed
  local prev=-1 cur
  sleep 0.3
  for _ in $(seq 50); do
    cur=$(stat -c %s "$1")
    [ "$cur" = "$prev" ] && return 0
    prev=$cur; sleep 0.2
  done
  echo "$1 still growing after 10 s" >&2
}
scrape_loop() {  # scrape_loop ADMIN_PORT OUTFILE: "path code seconds bytes" per scrape, 1/s
  while :; do
    for path in /metrics /api/stats; do
      curl -s -m 2 -o /dev/null -w "$path %{http_code} %{time_total} %{size_download}\n" \
        "http://127.0.0.1:$1$path" >>"$2" 2>/dev/null || echo "$path 000 2 0" >>"$2"
    done
    sleep 1
  done
}
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }  # utime + stime of all its threads
wrk_run() {  # wrk_run PORT SECONDS OUTFILE
  timeout -k 5 $(($2 + 30)) wrk -t2 -c"$CONNS" -d"$2"s --timeout 2s --latency \
    "http://127.0.0.1:$1/" >"$3" 2>&1
}
# run_case CASE SECONDS TAG -> RES="rps p50 p99 reqs non2xx sockerr lines bytes scrapes_ok scrapes
#                                   scrape_max_ms sync_ms" (the last six are 0 for "off")
run_case() {
  local c=$1 secs=$2 tag=$3 log="$RUN/$1.access.log" before=0 after lines=0 bytes=0
  local sok=0 sall=0 smax=0 sync_ms=0 t0 scraper=""
  if [ -n "${ADMIN[$c]:-}" ]; then
    before=$(stat -c %s "$log")
    scrape_loop "${ADMIN[$c]}" "$RUN/out/$tag-$c.scrape" &
    scraper=$!; EXTRA_PIDS=("$scraper")
  fi
  local cpu0; cpu0=$(cpu_ticks "${SPID[$c]}")
  wrk_run "${PORT[$c]}" "$secs" "$RUN/out/$tag-$c.txt"
  read -r rps p50 p99 reqs bad se < <(wrk_parse "$RUN/out/$tag-$c.txt")
  if [ -n "$scraper" ]; then settle "$log"; fi  # the log writer's work belongs to this run
  local cpu_us; cpu_us=$(awk -v a="$cpu0" -v b="$(cpu_ticks "${SPID[$c]}")" -v n="$reqs" -v hz="$(getconf CLK_TCK)" \
                             'BEGIN { printf "%.2f", (b - a) * 1e6 / hz / n }')
  [ "$reqs" -gt 0 ] || { echo "$c: wrk made no requests" >&2; cat "$RUN/out/$tag-$c.txt" >&2; exit 1; }
  if [ -n "$scraper" ]; then
    kill -TERM "$scraper" 2>/dev/null || true; wait "$scraper" 2>/dev/null || true; EXTRA_PIDS=()
    settle "$log"
    after=$(stat -c %s "$log")
    bytes=$((after - before))
    lines=$(tail -c +$((before + 1)) "$log" | wc -l)
    t0=$(date +%s%N); sync "$log"; sync_ms=$((($(date +%s%N) - t0) / 1000000))
    read -r sok sall smax < <(awk '{ n++; if ($2 == 200) ok++; if ($3 * 1000 > m) m = $3 * 1000 }
                                   END { printf "%d %d %.1f\n", ok, n, m }' "$RUN/out/$tag-$c.scrape")
  fi
  RES="$rps $p50 $p99 $reqs $bad $se $lines $bytes $sok $sall $smax $sync_ms $cpu_us"
}

echo "== observability cost: ROUNDS=$ROUNDS DUR=${DUR}s CONNS=$CONNS WORKERS=$WORKERS"
echo "   binary $BIN ($(date -r "$BIN" '+%F %T'))"
for c in "${CASES[@]}"; do run_case "$c" 1 warmup; done
for r in $(seq "$ROUNDS"); do
  for i in "${!CASES[@]}"; do  # rotate the order: round r starts with case (r-1) mod 3
    c=${CASES[$(((i + r - 1) % ${#CASES[@]}))]}
    run_case "$c" "$DUR" "$r"
    echo "$RES" >>"$RUN/res-$c"
    read -r rps p50 p99 reqs bad se lines bytes sok sall smax sync_ms cpu_us <<<"$RES"
    extra=""
    if [ -n "${ADMIN[$c]:-}" ]; then
      extra=$(awk -v n="$reqs" -v l="$lines" -v b="$bytes" -v ok="$sok" -v all="$sall" -v m="$smax" \
                  -v s="$sync_ms" 'BEGIN { printf "  log %+d lines vs wrk, %.0f B/req  scrapes %d/%d (max %.1f ms)  fsync %d ms",
                                           l - n, (l ? b / l : 0), ok, all, m, s }')
    fi
    awk -v r="$r" -v c="$c" -v rps="$rps" -v p50="$p50" -v p99="$p99" -v n="$reqs" -v bad="$bad" \
        -v se="$se" -v x="$extra" -v cpu="$cpu_us" 'BEGIN {
      printf "round %s %-8s %8.0f req/s  p50 %6.2f ms  p99 %6.2f ms  cpu %5.2f us/req%s%s%s\n", r, c, rps, p50, p99, cpu, x,
        (bad ? "  non-2xx " bad : ""), (se ? "  socket errors " se : "") }'
  done
done

# --- summary
base=$(median_col "$RUN/res-off" 1)
echo
echo "median of $ROUNDS rounds, wrk -t2 -c$CONNS ${DUR}s, sluice workers: $WORKERS, one route, one nginx backend"
echo
echo "| case | req/s | vs off | per-round ratio (median, min..max) | p50 ms | p99 ms | sluice CPU us/req | CPU vs off | log lines - wrk requests (min..max) | access log B/req | scrapes answered | scrape max ms |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
base_cpu=$(median_col "$RUN/res-off" 13)
warn=()
for c in "${CASES[@]}"; do
  f="$RUN/res-$c"
  rps=$(median_col "$f" 1); p50=$(median_col "$f" 2); p99=$(median_col "$f" 3); cpu=$(median_col "$f" 13)
  ratios=$(paste -d' ' "$f" "$RUN/res-off" | awk '{ print $1 / $14 }' | sort -g |
           awk '{ a[NR] = $1 } END { printf "%.3f (%.3f..%.3f)", a[int((NR + 1) / 2)], a[1], a[NR] }')
  if [ -n "${ADMIN[$c]:-}" ]; then
    logcols=$(awk -v conns="$CONNS" '{ d = $7 - $4; if (NR == 1 || d < lo) lo = d; if (NR == 1 || d > hi) hi = d
                                       l += $7; b += $8; ok += $9; all += $10; if ($11 > m) m = $11 }
                                     END { printf "%+d..%+d | %.0f | %d/%d | %.1f", lo, hi, (l ? b / l : 0), ok, all, m }' "$f")
  else
    logcols="- | - | - | -"
  fi
  awk -v l="${LABEL[$c]}" -v rps="$rps" -v b="$base" -v rt="$ratios" -v p50="$p50" -v p99="$p99" \
      -v lc="$logcols" -v cpu="$cpu" -v bc="$base_cpu" \
      'BEGIN { printf "| %s | %.0f | %.3f | %s | %.2f | %.2f | %.2f | %.3f | %s |\n", l, rps, rps / b, rt, p50, p99, cpu, cpu / bc, lc }'
  read -r bad se < <(awk '{ b += $5; s += $6 } END { print b + 0, s + 0 }' "$f")
  [ "$bad" -gt 0 ] && warn+=("$c: $bad non-2xx answers")
  [ "$se" -gt 0 ] && warn+=("$c: $se socket errors")
  if [ -n "${ADMIN[$c]:-}" ]; then
    missing=$(awk -v conns="$CONNS" '{ d = $7 - $4; if (d < 0) m -= d } END { print m + 0 }' "$f")
    extra=$(awk -v conns="$CONNS" '$7 - $4 > conns { n++ } END { print n + 0 }' "$f")
    ndrop=$(grep -ci 'dropped' "$RUN/$c.err" || true)
    if [ "$missing" -gt 0 ]; then
      if [ "$ndrop" -gt 0 ]; then
        warn+=("$c: $missing access log lines fewer than wrk requests; the error log reports it: $(grep -i -m1 dropped "$RUN/$c.err")")
      else
        warn+=("$c: $missing access log lines fewer than wrk requests, and the error log says nothing about dropped lines")
      fi
    fi
    [ "$extra" -gt 0 ] && warn+=("$c: $extra round(s) with more than $CONNS log lines beyond wrk's request count")
    [ "$(awk '$9 < $10 { n++ } END { print n + 0 }' "$f")" -gt 0 ] && warn+=("$c: some scrapes failed or timed out (2 s)")
  fi
done
echo
echo "vs off = ratio of the req/s medians; per-round ratio = each round's req/s over the same round's \"off\""

# --- cross-checks over the whole life of each "on" instance (sanity + warm-up + rounds):
# metrics count what the access log holds; error-log lines at warn/error level
for c in "${CASES[@]}"; do
  [ -n "${ADMIN[$c]:-}" ] || continue
  settle "$RUN/$c.access.log"
  total_lines=$(wc -l <"$RUN/$c.access.log")
  total_metric=$(curl -s -m 5 "http://127.0.0.1:${ADMIN[$c]}/metrics" |
                 awk '/^sluice_requests_total\{/ { s += $NF } END { printf "%d", s }')
  echo "$c: access log $total_lines lines, $(stat -c %s "$RUN/$c.access.log") bytes; sluice_requests_total $total_metric"
  [ "$total_lines" = "$total_metric" ] ||
    warn+=("$c: sluice_requests_total ($total_metric) differs from the access log's $total_lines lines")
done
for c in "${CASES[@]}"; do
  n=$(grep -c '"level":"\(warn\|error\)"' "$RUN/$c.err" || true)
  [ "$n" -gt 0 ] && warn+=("$c: $n warn/error lines in the error log, e.g. $(grep -m1 '"level":"\(warn\|error\)"' "$RUN/$c.err")")
done
if [ "${#warn[@]}" -gt 0 ]; then echo; printf 'WARNING: %s\n' "${warn[@]}"; fi
exit 0
