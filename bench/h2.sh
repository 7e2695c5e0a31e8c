#!/usr/bin/env bash
# HTTP/2 requests/s through a reverse proxy: sluice (listener `http2: true`) vs nginx (`listen ...
# http2`) vs haproxy (`bind ... proto h2` / `alpn h2`), each in front of the same HTTP/1.1 nginx
# backend (bench/peers/backend.conf.in, GET / -> ~100 bytes) over upstream keep-alive.
# Downstream modes (MODE=h2c|tls|both):
#   h2c   HTTP/2 prior knowledge over cleartext;
#   tls   HTTP/2 over TLS chosen by ALPN (one self-signed ECDSA P-256 certificate for all three;
#         each proxy's own TLS defaults).
# Load: h2load (nghttp2-client) -c$CLIENTS connections x -m$STREAMS concurrent streams, -t$THREADS,
# ${DUR}s per run after ${WARMUP}s of warm-up; ROUNDS interleaved rounds (the order of the proxies
# rotates from round to round), medians, ratios vs nginx and vs haproxy, mean request time, and the
# proxy process's CPU time per request (all threads, from /proc: less disturbed by a noisy shared
# machine than req/s). Every proxy runs $WORKERS worker(s)/thread(s) (1 by default, as the other
# benches), access logs off. Before the rounds each proxy is checked: it answers 200 with the
# backend's body over h2 (curl), and h2load reports that it spoke h2.
# Ports 9371-9377, loopback only, bounded in time; every process it starts is stopped by PID.
#   bench/h2.sh                 ROUNDS=3 DUR=5 WARMUP=1 CLIENTS=10 STREAMS=10 THREADS=1 WORKERS=1
#                               MODE=both KEEP=0 BIN=build/release/sluice
#   SKIP_SLUICE=1 bench/h2.sh   nginx and haproxy only (e.g. before sluice speaks h2)
set -Eeuo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
ROUNDS=${ROUNDS:-3}; DUR=${DUR:-5}; WARMUP=${WARMUP:-1}; CLIENTS=${CLIENTS:-10}; STREAMS=${STREAMS:-10}
THREADS=${THREADS:-1}; WORKERS=${WORKERS:-1}; MODE=${MODE:-both}; KEEP=${KEEP:-0}; SKIP_SLUICE=${SKIP_SLUICE:-0}
BIN=${BIN:-$PWD/build/release/sluice}
for tool in nginx haproxy h2load curl openssl ss timeout; do
  command -v "$tool" >/dev/null || { echo "needs $tool (scripts/deps.sh: nginx-light haproxy nghttp2-client curl)" >&2; exit 1; }
done
if [ "$SKIP_SLUICE" != 1 ] && [ ! -x "$BIN" ]; then
  echo "no release binary at $BIN: make release (or SKIP_SLUICE=1 for the peers only)" >&2; exit 1
fi
case "$MODE" in h2c) MODES=(h2c) ;; tls) MODES=(tls) ;; both) MODES=(h2c tls) ;;
  *) echo "MODE must be h2c, tls or both, got '$MODE'" >&2; exit 1 ;; esac
PROXIES=(nginx haproxy)
[ "$SKIP_SLUICE" = 1 ] || PROXIES=(sluice nginx haproxy)

P_BACKEND=9371
declare -A PORT=([sluice-h2c]=9372 [nginx-h2c]=9373 [haproxy-h2c]=9374
                 [sluice-tls]=9375 [nginx-tls]=9376 [haproxy-tls]=9377)
ports_free $P_BACKEND "${PORT[@]}"

RUN=$(mktemp -d /tmp/sluice-h2.XXXXXX)
mkdir -p "$RUN/tmp" "$RUN/out"
# shellcheck disable=SC2034  # EXTRA_PIDS is read by bench_cleanup (none here)
PIDS=(); EXTRA_PIDS=()
trap bench_cleanup EXIT

# --- certificate (TLS mode): self-signed, SAN IP:127.0.0.1; one PEM (cert + key) for haproxy
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -sha256 -days 2 -subj /CN=localhost \
  -addext 'subjectAltName=IP:127.0.0.1,DNS:localhost' -keyout "$RUN/key.pem" -out "$RUN/cert.pem" \
  2>"$RUN/openssl.err" || { cat "$RUN/openssl.err" >&2; exit 1; }
cat "$RUN/cert.pem" "$RUN/key.pem" >"$RUN/haproxy.pem"

# --- backend: one single-process HTTP/1.1 nginx
sed "s/@PORT@/$P_BACKEND/g" bench/peers/backend.conf.in >"$RUN/backend.conf"
nginx -p "$RUN/" -c "$RUN/backend.conf" -g 'daemon off;' >"$RUN/backend.out" 2>&1 &
PIDS+=($!)

# --- sluice: one h2c listener and one TLS listener, both `http2: true`
declare -A PROC=()
if [ "$SKIP_SLUICE" != 1 ]; then
  cat >"$RUN/sluice.yaml" <<YAML
workers: $WORKERS
shutdown_timeout: 2s
log: { access: off, error: stderr, level: warn }
listeners:
  - { name: h2c, listen: "127.0.0.1:${PORT[sluice-h2c]}", http2: true }
  - name: tls
    listen: "127.0.0.1:${PORT[sluice-tls]}"
    http2: true
    tls: { certificates: [ { cert: $RUN/cert.pem, key: $RUN/key.pem } ] }
upstreams:
  app: [127.0.0.1:$P_BACKEND]
routes:
  - { match: { path: / }, upstream: app }
YAML
  if ! "$BIN" validate --config "$RUN/sluice.yaml" >"$RUN/sluice.validate" 2>&1; then
    echo "the sluice config is invalid:" >&2; cat "$RUN/sluice.validate" >&2
    if grep -q 'not supported in this version' "$RUN/sluice.validate"; then
      echo "$BIN predates HTTP/2; rebuild it (flock /tmp/sluice-build.lock cmake --build build/release) or SKIP_SLUICE=1" >&2
    fi
    exit 1
  fi
  "$BIN" run -c "$RUN/sluice.yaml" 2>"$RUN/sluice.err" &
  PIDS+=($!); PROC[sluice]=$!
fi

# --- nginx: h2c and h2 over TLS, HTTP/1.1 keep-alive upstream
cat >"$RUN/nginx.conf" <<NGINX
worker_processes $WORKERS;
master_process off;
pid nginx.pid;
error_log nginx.error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_timeout 60s;
  keepalive_requests 1000000;        # also the limit of requests per h2 connection (1.19.7+)
  client_body_temp_path tmp/body; proxy_temp_path tmp/proxy; fastcgi_temp_path tmp/fastcgi;
  uwsgi_temp_path tmp/uwsgi; scgi_temp_path tmp/scgi;
  upstream be { server 127.0.0.1:$P_BACKEND; keepalive 256; }
  proxy_http_version 1.1;
  proxy_set_header Connection "";
  ssl_certificate $RUN/cert.pem;
  ssl_certificate_key $RUN/key.pem;
  ssl_protocols TLSv1.2 TLSv1.3;
  server { listen 127.0.0.1:${PORT[nginx-h2c]} http2; location / { proxy_pass http://be; } }
  server { listen 127.0.0.1:${PORT[nginx-tls]} ssl http2; location / { proxy_pass http://be; } }
}
NGINX
# master_process off runs one worker whatever worker_processes says; with more, keep the master
if [ "$WORKERS" -gt 1 ]; then sed -i 's/^master_process off;/master_process on;/' "$RUN/nginx.conf"; fi
nginx -p "$RUN/" -c "$RUN/nginx.conf" -g 'daemon off;' >"$RUN/nginx.out" 2>&1 &
PIDS+=($!); PROC[nginx]=$!

# --- haproxy: h2c (proto h2) and TLS (alpn h2), server-side keep-alive
cat >"$RUN/haproxy.cfg" <<HAPROXY
global
  nbthread $WORKERS
  maxconn 4000
defaults
  mode http
  option http-keep-alive
  http-reuse always
  timeout connect 2s
  timeout client 30s
  timeout server 30s
  timeout http-keep-alive 60s
frontend h2c
  bind 127.0.0.1:${PORT[haproxy-h2c]} proto h2
  default_backend be
frontend tls
  bind 127.0.0.1:${PORT[haproxy-tls]} ssl crt $RUN/haproxy.pem alpn h2,http/1.1
  default_backend be
backend be
  server b1 127.0.0.1:$P_BACKEND
HAPROXY
haproxy -f "$RUN/haproxy.cfg" -db >"$RUN/haproxy.out" 2>&1 &
PIDS+=($!); PROC[haproxy]=$!

wait_port $P_BACKEND
for p in "${PROXIES[@]}"; do for m in "${MODES[@]}"; do wait_port "${PORT[$p-$m]}"; done; done

url() { if [ "$2" = tls ]; then echo "https://127.0.0.1:${PORT[$1-tls]}/"; else echo "http://127.0.0.1:${PORT[$1-h2c]}/"; fi; }

# --- sanity: each proxy answers over h2 with the backend's body
for p in "${PROXIES[@]}"; do
  for m in "${MODES[@]}"; do
    if [ "$m" = tls ]; then opt=(--http2 -k); else opt=(--http2-prior-knowledge); fi
    got=$(curl -sS -m 5 "${opt[@]}" -w ' %{http_version} %{http_code}' "$(url "$p" "$m")" 2>&1) || true
    case "$got" in
      "backend $P_BACKEND "*" 2 200") ;;
      *) echo "$p/$m: expected the backend's answer over HTTP/2, got: $got" >&2
         tail -5 "$RUN/$p.err" "$RUN/$p.out" 2>/dev/null >&2 || true; exit 1 ;;
    esac
  done
done

cpu_ticks() {  # utime + stime of a process and of its child processes (nginx workers with WORKERS>1)
  local pid t=0
  for pid in "$1" $(pgrep -P "$1" || true); do
    t=$((t + $(awk '{ print $14 + $15 }' "/proc/$pid/stat" 2>/dev/null || echo 0)))
  done
  echo "$t"
}
# parse H2LOAD_OUTPUT -> "rps succeeded failed errored mean_ms protocol"
h2load_parse() {
  awk 'function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0
                        if (v ~ /s$/) return v * 1000; return v + 0 }
       /^finished in/ { rps = $4 }
       /^requests:/ { ok = $8; failed = $10; errored = $12 }
       /^time for request:/ { mean = ms($6) }
       /^Application protocol:/ { proto = $3 }
       END { printf "%s %d %d %d %s %s\n", rps + 0, ok, failed, errored, mean + 0, (proto == "" ? "?" : proto) }' "$1"
}
# run_case PROXY MODE SECONDS TAG (names the output file) -> RES="rps succeeded failed errored mean_ms proto cpu_us_per_req"
run_case() {
  local p=$1 m=$2 secs=$3 out="$RUN/out/$4-$1-$2.txt" cpu0 cpu1
  cpu0=$(cpu_ticks "${PROC[$p]}")
  timeout -k 5 $((secs + WARMUP + 30)) h2load -c"$CLIENTS" -m"$STREAMS" -t"$THREADS" -D"$secs" \
    --warm-up-time="$WARMUP" "$(url "$p" "$m")" >"$out" 2>&1 || true
  cpu1=$(cpu_ticks "${PROC[$p]}")
  read -r rps ok failed errored mean proto < <(h2load_parse "$out")
  [ "$ok" -gt 0 ] || { echo "$p/$m: h2load made no successful request:" >&2; tail -20 "$out" >&2; exit 1; }
  [ "$proto" = h2 ] || [ "$proto" = h2c ] || { echo "$p/$m: h2load spoke '$proto', not h2" >&2; exit 1; }
  # CPU over warm-up + measurement, per request measured (an upper bound of the same bias for all)
  local cpu_us; cpu_us=$(awk -v a="$cpu0" -v b="$cpu1" -v n="$ok" -v hz="$(getconf CLK_TCK)" -v d="$secs" -v w="$WARMUP" \
                             'BEGIN { printf "%.2f", (b - a) * 1e6 / hz / (n * (d + w) / d) }')
  RES="$rps $ok $failed $errored $mean $proto $cpu_us"
}

echo "== HTTP/2 reverse proxy: MODE=$MODE ROUNDS=$ROUNDS DUR=${DUR}s (+${WARMUP}s warm-up) h2load -c$CLIENTS -m$STREAMS -t$THREADS, WORKERS=$WORKERS"
[ "$SKIP_SLUICE" = 1 ] || echo "   sluice $BIN ($(date -r "$BIN" '+%F %T'))"
echo "   nginx $(nginx -v 2>&1 | sed 's/.*\///'), haproxy $(haproxy -v | head -1 | awk '{print $3}'), $(h2load --version | head -1)"
for p in "${PROXIES[@]}"; do for m in "${MODES[@]}"; do run_case "$p" "$m" 1 warmup; done; done
for r in $(seq "$ROUNDS"); do
  for m in "${MODES[@]}"; do
    for i in "${!PROXIES[@]}"; do
      p=${PROXIES[$(((i + r - 1) % ${#PROXIES[@]}))]}
      run_case "$p" "$m" "$DUR" "$r"
      echo "$RES" >>"$RUN/res-$p-$m"
      read -r rps ok failed errored mean proto cpu <<<"$RES"
      awk -v r="$r" -v c="$p/$m" -v rps="$rps" -v mean="$mean" -v f="$failed" -v e="$errored" -v cpu="$cpu" \
        'BEGIN { printf "round %s %-14s %9.0f req/s  mean %7.2f ms  cpu %6.2f us/req%s%s\n", r, c, rps, mean, cpu,
                 (f ? "  failed " f : ""), (e ? "  errored " e : "") }'
    done
  done
done

# --- summary
echo
echo "median of $ROUNDS rounds; h2load -c$CLIENTS -m$STREAMS -t$THREADS ${DUR}s; $WORKERS worker(s) each; HTTP/1.1 nginx backend"
echo
echo "| proxy | downstream | req/s | vs nginx | vs haproxy | mean request ms | CPU us/req | failed+errored |"
echo "|---|---|---|---|---|---|---|---|"
for m in "${MODES[@]}"; do
  n=$(median_col "$RUN/res-nginx-$m" 1); h=$(median_col "$RUN/res-haproxy-$m" 1)
  for p in "${PROXIES[@]}"; do
    f="$RUN/res-$p-$m"
    rps=$(median_col "$f" 1); mean=$(median_col "$f" 5); cpu=$(median_col "$f" 7)
    bad=$(awk '{ s += $3 + $4 } END { print s + 0 }' "$f")
    awk -v p="$p" -v m="$m" -v rps="$rps" -v n="$n" -v h="$h" -v mean="$mean" -v cpu="$cpu" -v bad="$bad" \
      'BEGIN { printf "| %s | %s | %.0f | %.3f | %.3f | %.2f | %.2f | %d |\n", p, (m == "tls" ? "h2 over TLS" : "h2c"), rps, rps / n, rps / h, mean, cpu, bad }'
  done
done
if [ "$SKIP_SLUICE" != 1 ]; then
  n=$(grep -c '"level":"\(warn\|error\)"' "$RUN/sluice.err" || true)
  [ "$n" -gt 0 ] && echo && echo "WARNING: sluice wrote $n warn/error lines, e.g. $(grep -m1 '"level":"\(warn\|error\)"' "$RUN/sluice.err")"
fi
exit 0
