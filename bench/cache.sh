#!/usr/bin/env bash
# Response cache: cache-hit req/s of sluice (route `cache`) vs nginx `proxy_cache` on the same
# content, and the same two proxies WITHOUT a cache (every request proxied) as the reference, so
# the table shows what the cache buys. Both sit in front of one cleartext nginx backend
# (bench/peers/backend.conf.in, plus a location serving two fixed files, 1 KiB and 64 KiB, and a
# stub_status that counts the requests it receives) over upstream keep-alive.
#   sluice: `workers: 1`, access log off, top-level `cache: { max_size: 64MiB }`, one route with
#           `cache: { ttl: 10m }` (the reference: a second instance, the same route without cache);
#   nginx:  worker_processes 1, access log off, `proxy_cache_path` in the scratch dir,
#           `proxy_cache_key $host$uri`, `proxy_cache_valid 200 10m`, `X-Cache-Status` header
#           (the reference: a second server block of the same nginx, without proxy_cache).
# Before measuring, each cached target is warmed (one request) and a second request must be a hit
# (sluice `x-cache: HIT`, nginx `X-Cache-Status: HIT`) with the full body, or the script aborts.
# Around every wrk run the backend's request counter (stub_status) is read: a cached case must
# not reach the backend at all; the count is printed per round and in the table.
# wrk -t2 -c$CONNS -d${DUR}s --latency, ROUNDS interleaved rounds (per round: each body size x
# {sluice, nginx} x {cache hit, no cache}); prints per-round lines and a markdown table of medians
# (req/s, p50, p99, sluice/nginx). Ports 9501-9505, loopback only, bounded in time; every process
# it starts is stopped by PID.
#   bench/cache.sh          ROUNDS=3 DUR=5 CONNS=50 SIZES="1024 65536" NGINX_SENDFILE=off KEEP=0
#                           BIN=build/release/sluice (KEEP=1 keeps the scratch dir and wrk output)
# NGINX_SENDFILE=on lets the nginx peer send cache files with sendfile(2) (nginx's default is
# off, as in the other bench peers; Debian's packaged nginx.conf turns it on).
# Heavy: run it alone, e.g. flock /tmp/sluice-build.lock bash bench/cache.sh
set -Eeuo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
ROUNDS=${ROUNDS:-3}; DUR=${DUR:-5}; CONNS=${CONNS:-50}; SIZES=${SIZES:-"1024 65536"}
NGINX_SENDFILE=${NGINX_SENDFILE:-off}; KEEP=${KEEP:-0}
BIN=${BIN:-$PWD/build/release/sluice}
if [ ! -x "$BIN" ]; then
  echo "no release binary at $BIN; build it first:  make release" >&2
  echo "(or, next to other builds:  flock /tmp/sluice-build.lock cmake --build build/release)" >&2
  exit 1
fi
for tool in nginx wrk curl ss timeout awk; do
  command -v "$tool" >/dev/null || { echo "needs $tool (apt-get install -y nginx wrk curl)" >&2; exit 1; }
done
nginx -V 2>&1 | grep -q -- --with-http_stub_status_module ||
  { echo "this nginx lacks stub_status; the backend request count needs it" >&2; exit 1; }
case "$NGINX_SENDFILE" in on|off) ;; *) echo "NGINX_SENDFILE must be on or off" >&2; exit 1 ;; esac
for s in $SIZES; do
  [[ "$s" =~ ^[1-9][0-9]*$ && "$s" -le 1048576 ]] || { echo "SIZES: byte counts 1..1048576, got '$s'" >&2; exit 1; }
done

P_BACKEND=9501
TARGETS=(sluice-cache nginx-cache sluice-proxy nginx-proxy)
declare -A PORT=([sluice-cache]=9502 [sluice-proxy]=9503 [nginx-cache]=9504 [nginx-proxy]=9505)
busy=()
for p in $P_BACKEND "${PORT[@]}"; do
  if ss -Hltn "sport = :$p" | grep -q .; then busy+=("$p"); fi
done
if [ ${#busy[@]} -gt 0 ]; then echo "port(s) ${busy[*]} already in use; stop what listens there" >&2; exit 1; fi

RUN=$(mktemp -d /tmp/sluice-cache.XXXXXX)
# nginx's worker runs as `nobody` when started by root: it must traverse RUN to reach its cache
chmod 0755 "$RUN"
mkdir -p "$RUN/tmp" "$RUN/out" "$RUN/www"
PIDS=()
EXTRA_PIDS=(); trap bench_cleanup EXIT

# --- the bodies: fixed printable content, one file per size
for s in $SIZES; do
  yes 'sluice cache bench 0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ' |
    head -c "$s" >"$RUN/www/$s" || true
  [ "$(stat -c %s "$RUN/www/$s")" = "$s" ] || { echo "could not write a $s-byte body" >&2; exit 1; }
done

# --- backend: bench/peers/backend.conf.in, plus /body/SIZE served from RUN/www and a request
# counter (stub_status counts every request it receives, itself included)
sed -e "s/@PORT@/$P_BACKEND/g" \
    -e "s#location / {#location /body/ { alias $RUN/www/; } location = /_status { stub_status; } location / {#" \
    bench/peers/backend.conf.in >"$RUN/backend.conf"
grep -q 'location /body/' "$RUN/backend.conf" ||
  { echo "bench/peers/backend.conf.in changed shape: no 'location / {' to extend" >&2; exit 1; }
nginx -p "$RUN/" -c "$RUN/backend.conf" -g 'daemon off;' >"$RUN/backend.out" 2>&1 &
PIDS+=($!)

# --- nginx peer: one worker, upstream keep-alive; a caching server and a plain proxy
cat >"$RUN/nginx-peer.conf" <<EOF
worker_processes 1;
pid nginx-peer.pid;
error_log nginx-peer.error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_timeout 60s;
    keepalive_requests 1000000;
    sendfile $NGINX_SENDFILE;
    client_body_temp_path tmp/body;
    proxy_temp_path tmp/proxy;
    fastcgi_temp_path tmp/fastcgi;
    uwsgi_temp_path tmp/uwsgi;
    scgi_temp_path tmp/scgi;
    # keepalive_requests: nginx otherwise closes an upstream connection after 1000 requests
    upstream be { server 127.0.0.1:$P_BACKEND; keepalive 256; keepalive_requests 1000000; }
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_cache_path $RUN/nginx-cache levels=1:2 keys_zone=bench:10m max_size=64m inactive=60m use_temp_path=off;
    server {
        listen 127.0.0.1:${PORT[nginx-cache]};
        location / {
            proxy_pass http://be;
            proxy_cache bench;
            proxy_cache_key \$host\$uri;
            proxy_cache_valid 200 10m;
            add_header X-Cache-Status \$upstream_cache_status;
        }
    }
    server { listen 127.0.0.1:${PORT[nginx-proxy]}; location / { proxy_pass http://be; } }
}
EOF
nginx -t -q -p "$RUN/" -c "$RUN/nginx-peer.conf" -g 'daemon off;' >"$RUN/nginx-peer.test" 2>&1 ||
  { echo "nginx peer config rejected:" >&2; cat "$RUN/nginx-peer.test" >&2; exit 1; }
nginx -p "$RUN/" -c "$RUN/nginx-peer.conf" -g 'daemon off;' >"$RUN/nginx-peer.out" 2>&1 &
PIDS+=($!)

# --- sluice: two instances, the same route with and without cache
sluice_conf() {  # sluice_conf NAME ROUTE_EXTRA TOP_EXTRA
  cat >"$RUN/$1.yaml" <<YAML
listen: 127.0.0.1:${PORT[$1]}
workers: 1
shutdown_timeout: 2s
log: { access: off, error: stderr, level: warn }
$3
upstreams:
  app: [127.0.0.1:$P_BACKEND]
routes:
  - { match: { path: / }, upstream: app$2 }
YAML
  if ! "$BIN" validate --config "$RUN/$1.yaml" >"$RUN/$1.validate" 2>&1; then
    cat "$RUN/$1.validate" >&2
    if grep -q 'not supported in this version' "$RUN/$1.validate"; then
      echo "$BIN predates the response cache; rebuild it: flock /tmp/sluice-build.lock cmake --build build/release" >&2
    fi
    exit 1
  fi
}
sluice_conf sluice-cache ", cache: { ttl: 10m }" "cache: { max_size: 64MiB }"
sluice_conf sluice-proxy "" ""
for name in sluice-cache sluice-proxy; do
  "$BIN" run -c "$RUN/$name.yaml" 2>"$RUN/$name.err" &
  PIDS+=($!)
done
wait_port "$P_BACKEND"
for t in "${TARGETS[@]}"; do wait_port "${PORT[$t]}"; done

backend_count() {  # requests the backend has received so far, this status request included:
  # the backend got $((after - before - 1)) other requests between two readings
  local n
  n=$(curl -s -m 5 "http://127.0.0.1:$P_BACKEND/_status" | awk 'NR == 3 { print $3 }')
  [[ "$n" =~ ^[0-9]+$ ]] || { echo "backend stub_status unreadable" >&2; exit 1; }
  echo "$n"
}
backend_count >/dev/null

# --- sanity: every target serves the full body; a cached target's second request is a hit and
# does not reach the backend
url() { echo "http://127.0.0.1:${PORT[$1]}/body/$2"; }
for s in $SIZES; do
  for t in "${TARGETS[@]}"; do
    hdr="$RUN/out/check-$t-$s.hdr"
    for i in 1 2; do
      [ "$i" = 2 ] && b0=$(backend_count)
      res=$(curl -s -m 5 -D "$hdr" -o /dev/null -w '%{http_code} %{size_download}' "$(url "$t" "$s")" || true)
    done
    b1=$(backend_count)
    [ "$res" = "200 $s" ] ||
      { echo "$t: GET $(url "$t" "$s") answered '$res', expected '200 $s'" >&2; KEEP=1; exit 1; }
    case $t in
      sluice-cache) want=x-cache ;;
      nginx-cache)  want=x-cache-status ;;
      *) continue ;;
    esac
    got=$(tr -d '\r' <"$hdr" | awk -F': *' -v h="$want" 'tolower($1) == h { print $2 }')
    if [ "$got" != HIT ] || [ $((b1 - b0 - 1)) != 0 ]; then
      echo "$t, $s-byte body: the second request is not a cache hit ($want: '${got:-absent}'," \
           "backend requests +$((b1 - b0 - 1))); response headers:" >&2
      cat "$hdr" >&2; KEEP=1; exit 1
    fi
  done
done

# --- measurement
wrk_run() {  # wrk_run URL SECONDS OUTFILE
  timeout -k 5 $(($2 + 30)) wrk -t2 -c"$CONNS" -d"$2"s --timeout 2s --latency "$1" >"$3" 2>&1 || true
}
run_case() {  # run_case TARGET SIZE SECONDS TAG -> RES="rps p50 p99 reqs non2xx sockerr backend"
  local t=$1 s=$2 out="$RUN/out/$4-$1-$2.txt" before after
  before=$(backend_count)
  wrk_run "$(url "$t" "$s")" "$3" "$out"
  after=$(backend_count)
  read -r rps p50 p99 reqs bad se < <(wrk_parse "$out")
  [ "$reqs" -gt 0 ] || { echo "$t $s: wrk made no requests" >&2; cat "$out" >&2; exit 1; }
  RES="$rps $p50 $p99 $reqs $bad $se $((after - before - 1))"
}
hsize() { if [ $(($1 % 1024)) = 0 ]; then echo "$(($1 / 1024)) KiB"; else echo "$1 B"; fi; }

echo "== response cache: ROUNDS=$ROUNDS DUR=${DUR}s CONNS=$CONNS bodies: $SIZES bytes, nginx sendfile $NGINX_SENDFILE"
echo "   binary $BIN ($(date -r "$BIN" '+%F %T')); $(nginx -v 2>&1)"
echo "   warm + hit check passed for sluice (x-cache: HIT) and nginx (X-Cache-Status: HIT)"
for s in $SIZES; do for t in "${TARGETS[@]}"; do run_case "$t" "$s" 1 warmup; done; done
for r in $(seq "$ROUNDS"); do
  for s in $SIZES; do
    for t in "${TARGETS[@]}"; do
      run_case "$t" "$s" "$DUR" "$r"
      echo "$RES" >>"$RUN/res-$t-$s"
      read -r rps p50 p99 reqs bad se be <<<"$RES"
      awk -v r="$r" -v t="$t" -v s="$(hsize "$s")" -v rps="$rps" -v p50="$p50" -v p99="$p99" \
          -v n="$reqs" -v bad="$bad" -v se="$se" -v be="$be" 'BEGIN {
        printf "round %s %-7s %-13s %8.0f req/s  p50 %6.2f ms  p99 %6.2f ms  backend +%d (%.3f/req)%s%s\n",
          r, s, t, rps, p50, p99, be, be / n, (bad ? "  non-2xx " bad : ""), (se ? "  socket errors " se : "") }'
    done
  done
done

# --- summary
sum_col() { awk -v k="$2" '{ s += $k } END { print s + 0 }' "$1"; }
declare -A M
warn=()
for s in $SIZES; do
  for t in "${TARGETS[@]}"; do
    f="$RUN/res-$t-$s"
    M[$t,$s,rps]=$(median_col "$f" 1); M[$t,$s,p50]=$(median_col "$f" 2); M[$t,$s,p99]=$(median_col "$f" 3)
    M[$t,$s,n]=$(sum_col "$f" 4); M[$t,$s,be]=$(sum_col "$f" 7)
    bad=$(sum_col "$f" 5); se=$(sum_col "$f" 6)
    [ "$bad" -gt 0 ] && warn+=("$t $(hsize "$s"): $bad non-2xx answers")
    [ "$se" -gt 0 ] && warn+=("$t $(hsize "$s"): $se socket errors")
    [[ "$t" == *-cache && "${M[$t,$s,be]}" -gt 0 ]] &&
      warn+=("$t $(hsize "$s"): the backend got ${M[$t,$s,be]} requests during cache-hit runs")
  done
done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else printf "-" }'; }
echo
echo "median of $ROUNDS round(s), wrk -t2 -c$CONNS ${DUR}s, 1 worker each; backend requests are summed over all rounds"
echo
echo "| body | case | sluice req/s | nginx req/s | sluice/nginx | sluice p50 ms | nginx p50 ms | sluice p99 ms | nginx p99 ms | backend requests sluice / nginx |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for s in $SIZES; do
  for mode in cache proxy; do
    label="cache hit"; [ "$mode" = proxy ] && label="no cache (proxied)"
    a=sluice-$mode b=nginx-$mode
    awk -v s="$(hsize "$s")" -v l="$label" -v ra="${M[$a,$s,rps]}" -v rb="${M[$b,$s,rps]}" \
        -v q="$(ratio "${M[$a,$s,rps]}" "${M[$b,$s,rps]}")" \
        -v p5a="${M[$a,$s,p50]}" -v p5b="${M[$b,$s,p50]}" -v p9a="${M[$a,$s,p99]}" -v p9b="${M[$b,$s,p99]}" \
        -v ba="${M[$a,$s,be]}" -v na="${M[$a,$s,n]}" -v bb="${M[$b,$s,be]}" -v nb="${M[$b,$s,n]}" 'BEGIN {
      printf "| %s | %s | %.0f | %.0f | %s | %.2f | %.2f | %.2f | %.2f | %d of %d / %d of %d |\n",
        s, l, ra, rb, q, p5a, p5b, p9a, p9b, ba, na, bb, nb }'
  done
done
echo "(no-cache rows: the backend count may exceed wrk's by up to $CONNS per run, the requests in flight when wrk stops)"
echo
echo "| body | sluice: cache hit / no cache | nginx: cache hit / no cache |"
echo "|---|---|---|"
for s in $SIZES; do
  echo "| $(hsize "$s") | $(ratio "${M[sluice-cache,$s,rps]}" "${M[sluice-proxy,$s,rps]}") | $(ratio "${M[nginx-cache,$s,rps]}" "${M[nginx-proxy,$s,rps]}") |"
done
for f in "$RUN"/sluice-*.err "$RUN"/nginx-peer.error.log "$RUN"/backend-*.error.log; do
  [ -s "$f" ] && warn+=("$(basename "$f"): $(wc -l <"$f") line(s), e.g. $(head -c 200 "$f" | head -1)")
done
if [ "${#warn[@]}" -gt 0 ]; then echo; printf 'WARNING: %s\n' "${warn[@]}"; fi
exit 0
