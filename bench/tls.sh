#!/usr/bin/env bash
# TLS termination: sluice vs nginx vs haproxy with the same certificate, the same TLS versions,
# groups and cipher order, all proxying to one cleartext nginx backend (bench/peers/backend.conf.in)
# on 127.0.0.1:9340 over upstream keep-alive. Per proxy, ROUNDS interleaved rounds of:
#   ka     keep-alive HTTPS: wrk -t2 -c$CONNS -d${DUR}s --latency -> req/s and p99;
#   close  a new TLS connection per request: the same wrk with `Connection: close` -> handshakes/s.
#          NOTE: wrk RESUMES TLS sessions on reconnect (Debian's wrk 4.1: measured 99.8% resumed;
#          it reuses the SSL object of a connection slot, so OpenSSL offers the last session's
#          ticket), i.e. TLS 1.3 PSK + ECDHE without a certificate signature. The script measures
#          the share of resumed handshakes on a probe port of the nginx peer and prints it; this
#          figure is "reconnects/s, nearly all resumed", not full handshakes;
#   full   full handshakes: SCLIENTS parallel `openssl s_time -new -www /` (a new session each
#          time, HTTP/1.0 GET, the server closes) for DUR s -> handshakes/s (wall clock).
# Prints the median of each figure per proxy and sluice/nginx, sluice/haproxy ratios (markdown).
# Ports 9340-9344, loopback only, bounded in time; every process it starts is stopped by PID.
#   bench/tls.sh                          ROUNDS=3 DUR=5 CONNS=50 SCLIENTS=2 CERT=ecdsa|rsa
#   PEER_CIPHERS=default bench/tls.sh     nginx/haproxy with their own cipher defaults (see below)
#   KEEP=1 bench/tls.sh                   keep the scratch directory (configs, raw wrk outputs)
# sluice's TLS is fixed in src/tls/tls.cpp: TLS 1.2+1.3, groups X25519:P-256:P-384, TLS 1.3
# suites AES128-GCM, AES256-GCM, CHACHA20 in server order. By default (PEER_CIPHERS=sluice) the
# peers get the same groups, suites and server order, so all three negotiate the same thing
# (checked and printed before the runs); with their own defaults (OpenSSL order) nginx/haproxy
# would likely pick AES256-GCM instead; the table at the start shows what was negotiated.
set -Eeuo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}; DUR=${DUR:-5}; CONNS=${CONNS:-50}; SCLIENTS=${SCLIENTS:-2}
CERT=${CERT:-ecdsa}; PEER_CIPHERS=${PEER_CIPHERS:-sluice}; KEEP=${KEEP:-0}
BIN=${BIN:-$PWD/build/release/sluice}
P_BACKEND=9340 P_NGINX=9341 P_HAPROXY=9342 P_SLUICE=9343 P_PROBE=9344
PROXIES=(nginx haproxy sluice)
declare -A PORT=([nginx]=$P_NGINX [haproxy]=$P_HAPROXY [sluice]=$P_SLUICE)

if [ ! -x "$BIN" ]; then
  echo "no release binary at $BIN; build it first:  make release" >&2
  echo "(or, next to other builds:  flock /tmp/sluice-build.lock cmake --build build/release)" >&2
  exit 1
fi
for tool in nginx haproxy wrk openssl curl ss timeout; do
  command -v "$tool" >/dev/null || { echo "missing: $tool (apt-get install -y nginx haproxy wrk)" >&2; exit 1; }
done
case "$CERT" in ecdsa|rsa) ;; *) echo "CERT must be ecdsa or rsa, got '$CERT'" >&2; exit 1 ;; esac
busy=()
for p in $P_BACKEND $P_NGINX $P_HAPROXY $P_SLUICE $P_PROBE; do
  if ss -Hltn "sport = :$p" | grep -q .; then busy+=("$p"); fi
done
if [ ${#busy[@]} -gt 0 ]; then echo "port(s) ${busy[*]} already in use on this machine; stop what listens there" >&2; exit 1; fi

TMP=$(mktemp -d /tmp/sluice-tls.XXXXXX)
mkdir -p "$TMP/tmp" "$TMP/out"
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for _ in $(seq 50); do  # up to 5 s for a graceful stop, then SIGKILL what is left
    local alive=0
    for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ "$KEEP" = 1 ]; then echo "scratch directory kept: $TMP" >&2; else rm -rf "$TMP"; fi
}
trap cleanup EXIT

# ---- certificate: self-signed, SAN IP:127.0.0.1 + DNS:localhost; one PEM for haproxy ----
if [ "$CERT" = rsa ]; then keyopt=(-newkey rsa:2048); else keyopt=(-newkey ec -pkeyopt ec_paramgen_curve:P-256); fi
openssl req -x509 "${keyopt[@]}" -nodes -sha256 -days 2 -subj /CN=localhost \
  -addext 'subjectAltName=IP:127.0.0.1,DNS:localhost' \
  -keyout "$TMP/key.pem" -out "$TMP/cert.pem" 2>"$TMP/openssl-req.err" \
  || { cat "$TMP/openssl-req.err" >&2; exit 1; }
cat "$TMP/cert.pem" "$TMP/key.pem" >"$TMP/haproxy.pem"

# ---- the TLS settings the peers share with sluice ----
GROUPS_OPENSSL=X25519:P-256:P-384                # sluice's kGroups
GROUPS_NGINX=X25519:prime256v1:secp384r1
TLS12_CIPHERS=ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305
TLS13_SUITES=TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256
if [ "$PEER_CIPHERS" = sluice ]; then
  NGINX_CIPHERS="ssl_ciphers $TLS12_CIPHERS; ssl_conf_command Ciphersuites $TLS13_SUITES; ssl_prefer_server_ciphers on;"
  HAPROXY_CIPHERS="ciphers $TLS12_CIPHERS ciphersuites $TLS13_SUITES"
else
  NGINX_CIPHERS=""; HAPROXY_CIPHERS=""
fi

# ---- backend: one single-process nginx answering GET / with ~100 bytes ----
sed "s/@PORT@/$P_BACKEND/g" bench/peers/backend.conf.in >"$TMP/backend.conf"
nginx -p "$TMP/" -c "$TMP/backend.conf" -g 'daemon off;' >"$TMP/backend.out" 2>&1 &
PIDS+=($!)

# ---- nginx: 2 workers, upstream keep-alive; :P_PROBE is the same server with a resumption log ----
cat >"$TMP/nginx-tls.conf" <<EOF
worker_processes 2;
pid nginx-tls.pid;
error_log nginx-tls.error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_timeout 60s;
    keepalive_requests 1000000;
    client_body_temp_path tmp/body;
    proxy_temp_path tmp/proxy;
    fastcgi_temp_path tmp/fastcgi;
    uwsgi_temp_path tmp/uwsgi;
    scgi_temp_path tmp/scgi;
    ssl_certificate $TMP/cert.pem;
    ssl_certificate_key $TMP/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;          # nginx 1.22's default lacks TLSv1.3
    ssl_ecdh_curve $GROUPS_NGINX;
    $NGINX_CIPHERS
    upstream be { server 127.0.0.1:$P_BACKEND; keepalive 256; }
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    log_format tlsinfo '\$ssl_session_reused \$ssl_protocol \$ssl_cipher \$ssl_curve';
    server { listen 127.0.0.1:$P_NGINX ssl; location / { proxy_pass http://be; } }
    server { listen 127.0.0.1:$P_PROBE ssl; access_log probe.log tlsinfo; location / { proxy_pass http://be; } }
}
EOF
nginx -p "$TMP/" -c "$TMP/nginx-tls.conf" -g 'daemon off;' >"$TMP/nginx.out" 2>&1 &
PIDS+=($!)

# ---- haproxy: 2 threads, http-reuse ----
cat >"$TMP/haproxy-tls.cfg" <<EOF
global
    nbthread 2
    maxconn 9000
defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    timeout http-request 10s
    timeout http-keep-alive 60s
frontend tls
    bind 127.0.0.1:$P_HAPROXY ssl crt $TMP/haproxy.pem ssl-min-ver TLSv1.2 ssl-max-ver TLSv1.3 curves $GROUPS_OPENSSL $HAPROXY_CIPHERS
    default_backend be
backend be
    server b1 127.0.0.1:$P_BACKEND
EOF
haproxy -f "$TMP/haproxy-tls.cfg" >"$TMP/haproxy.out" 2>&1 &
PIDS+=($!)

# ---- sluice: 2 workers, one TLS listener, one upstream, one route ----
cat >"$TMP/sluice-tls.yaml" <<EOF
workers: 2
log: { access: off, error: stderr, level: warn }
listeners:
  - name: tls
    listen: 127.0.0.1:$P_SLUICE
    tls: { certificates: [ { cert: $TMP/cert.pem, key: $TMP/key.pem } ] }
upstreams:
  app: [127.0.0.1:$P_BACKEND]
routes:
  - { match: { path: / }, upstream: app }
EOF
if ! "$BIN" validate --config "$TMP/sluice-tls.yaml" >"$TMP/sluice-validate.out" 2>&1; then
  cat "$TMP/sluice-validate.out" >&2
  if grep -q 'not enforced' "$TMP/sluice-validate.out"; then
    echo "this sluice binary predates listener TLS; rebuild it: flock /tmp/sluice-build.lock cmake --build build/release" >&2
  fi
  exit 1
fi
"$BIN" run -c "$TMP/sluice-tls.yaml" 2>"$TMP/sluice.err" &
PIDS+=($!)

wait_port() {
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done
  echo "nothing listens on 127.0.0.1:$1 after 5 s; see $TMP/*.out, $TMP/*.err (KEEP=1 keeps them)" >&2
  KEEP=1; return 1
}
for p in $P_BACKEND $P_NGINX $P_HAPROXY $P_SLUICE $P_PROBE; do wait_port "$p"; done

# ---- sanity: a 200 through each proxy, `Connection: close` honoured, what gets negotiated ----
echo "== TLS as negotiated with the openssl client (cert: $CERT, peer ciphers: $PEER_CIPHERS)"
echo "| proxy | protocol, cipher | key exchange | resumes a ticket | response Connection header to Connection: close |"
echo "|---|---|---|---|---|"
for t in "${PROXIES[@]}"; do
  url="https://127.0.0.1:${PORT[$t]}/"
  code=$(curl -sk --max-time 5 -o /dev/null -w '%{http_code}' "$url" || true)
  [ "$code" = 200 ] || { echo "$t: GET $url answered '$code', expected 200" >&2; KEEP=1; exit 1; }
  conn=$(curl -sk --max-time 5 -o /dev/null -D - -H 'Connection: close' "$url" | tr -d '\r' \
         | awk -F': *' 'tolower($1)=="connection"{print tolower($2)}' || true)
  sess="$TMP/$t.sess"
  printf 'GET / HTTP/1.0\r\n\r\n' | timeout 5 openssl s_client -connect "127.0.0.1:${PORT[$t]}" \
    -servername localhost -ign_eof -sess_out "$sess" >"$TMP/$t.s_client" 2>&1 || true
  printf 'GET / HTTP/1.0\r\n\r\n' | timeout 5 openssl s_client -connect "127.0.0.1:${PORT[$t]}" \
    -servername localhost -ign_eof -sess_in "$sess" >"$TMP/$t.s_client2" 2>&1 || true
  proto=$(grep -m1 -oE '^(New|Reused), [^,]+, Cipher is [A-Z0-9_-]+' "$TMP/$t.s_client" | sed 's/^New, //; s/Cipher is //' || true)
  kex=$(grep -m1 -oE 'Server Temp Key: [^,]+' "$TMP/$t.s_client" | sed 's/Server Temp Key: //' || true)
  if grep -q '^Reused,' "$TMP/$t.s_client2"; then resumes=yes; else resumes=no; fi
  echo "| $t | ${proto:-?} | ${kex:-?} | $resumes | ${conn:-(no Connection header)} |"
  [ "$conn" = close ] || echo "WARNING: $t does not answer 'Connection: close'; wrk would keep that connection and its handshake figure is meaningless" >&2
done

# ---- does wrk resume TLS sessions when it reconnects? (nginx logs \$ssl_session_reused) ----
timeout 10 wrk -t1 -c4 -d1s -H 'Connection: close' "https://127.0.0.1:$P_PROBE/" >"$TMP/probe-wrk.txt" 2>&1 || true
read -r wrk_total wrk_reused < <(awk '{n++; if ($1 == "r") r++} END {print n + 0, r + 0}' "$TMP/probe.log")
: >"$TMP/probe.log"
timeout 10 openssl s_time -connect "127.0.0.1:$P_PROBE" -new -time 1 -www / >/dev/null 2>&1 || true
read -r st_total st_reused < <(awk '{n++; if ($1 == "r") r++} END {print n + 0, r + 0}' "$TMP/probe.log")
echo
echo "wrk with 'Connection: close': $wrk_reused of $wrk_total new connections resumed a TLS session (nginx \$ssl_session_reused);"
echo "openssl s_time -new:           $st_reused of $st_total resumed."
if [ "$wrk_total" -gt 0 ] && [ $(( 2 * wrk_reused )) -gt "$wrk_total" ]; then
  echo "=> wrk's handshakes/s is mostly RESUMED handshakes (PSK+ECDHE, no signature); the s_time column is full handshakes."
fi

# ---- measurements ----
wrk_run() {  # wrk_run PROXY SECONDS [extra wrk args...]
  local t=$1 d=$2; shift 2
  timeout $(( d + 15 )) wrk -t2 -c"$CONNS" -d"$d"s --timeout 2s --latency "$@" "https://127.0.0.1:${PORT[$t]}/"
}
stime_run() {  # stime_run PROXY SECONDS -> "handshakes/s bytes-per-connection"
  local t=$1 d=$2 i start end
  start=$(date +%s.%N)
  for i in $(seq "$SCLIENTS"); do
    timeout $(( d + 15 )) openssl s_time -connect "127.0.0.1:${PORT[$t]}" -new -time "$d" -www / \
      >"$TMP/out/stime-$t-$i.txt" 2>&1 &
  done
  wait || true  # runs in the caller's process substitution: only these s_time processes
  end=$(date +%s.%N)
  # "N connections in S real seconds, B bytes read per connection"; S is whole seconds, so the
  # rate uses the wall clock measured here around all clients.
  cat "$TMP"/out/stime-"$t"-*.txt | awk -v s="$start" -v e="$end" '
    /connections in [0-9]+ real seconds/ { n += $1; b += $(NF-4) * $1 }
    END { printf "%.1f %d\n", (e > s ? n / (e - s) : 0), (n ? b / n : 0) }'
}
# wrk output -> "req/s p99_ms errors"
wrk_parse() {
  awk '
    function ms(v) { if (v ~ /us$/) return v * 0.001; if (v ~ /ms$/) return v + 0; if (v ~ /m$/) return v * 60000; return v * 1000 }
    /Requests\/sec/ { rps = $2 }
    /^ +99%/ { p99 = ms($2) }
    /Socket errors/ { gsub(/,/, ""); err += $4 + $6 + $8 + $10 }
    /Non-2xx or 3xx/ { err += $NF }
    END { printf "%s %.3f %d\n", (rps == "" ? 0 : rps), p99, err }' "$1"
}

echo
echo "== ROUNDS=$ROUNDS DUR=${DUR}s CONNS=$CONNS SCLIENTS=$SCLIENTS (2 cores shared by client and proxy)"
for t in "${PROXIES[@]}"; do wrk_run "$t" 1 >/dev/null 2>&1 || true; done  # warm-up: pools, caches
declare -A KA_RPS KA_P99 CL_RPS CL_P99 FULL ERRS
for r in $(seq "$ROUNDS"); do
  for t in "${PROXIES[@]}"; do
    wrk_run "$t" "$DUR" >"$TMP/out/$r-$t-ka.txt" 2>&1 || true
    read -r a b e1 < <(wrk_parse "$TMP/out/$r-$t-ka.txt")
    wrk_run "$t" "$DUR" -H 'Connection: close' >"$TMP/out/$r-$t-close.txt" 2>&1 || true
    read -r c d e2 < <(wrk_parse "$TMP/out/$r-$t-close.txt")
    read -r f bpc < <(stime_run "$t" "$DUR")
    KA_RPS[$t]+="$a "; KA_P99[$t]+="$b "; CL_RPS[$t]+="$c "; CL_P99[$t]+="$d "; FULL[$t]+="$f "
    ERRS[$t]=$(( ${ERRS[$t]:-0} + e1 + e2 ))
    printf 'round %d %-7s  keep-alive %9.0f req/s p99 %6.2f ms | close %8.0f req/s p99 %6.2f ms | s_time -new %7.0f /s (%d B/conn) | errors %d\n' \
      "$r" "$t" "$a" "$b" "$c" "$d" "$f" "$bpc" $(( e1 + e2 ))
  done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR] = $1} END { if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
declare -A M
for t in "${PROXIES[@]}"; do
  M[$t,ka]=$(median <<<"${KA_RPS[$t]}"); M[$t,kap99]=$(median <<<"${KA_P99[$t]}")
  M[$t,cl]=$(median <<<"${CL_RPS[$t]}"); M[$t,clp99]=$(median <<<"${CL_P99[$t]}")
  M[$t,full]=$(median <<<"${FULL[$t]}")
done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else printf "-" }'; }
echo
echo "== medians of $ROUNDS round(s), cert $CERT, $DUR s each (wrk -t2 -c$CONNS; s_time x$SCLIENTS)"
echo
echo "| proxy | keep-alive req/s | keep-alive p99 ms | new conn/s (wrk, Connection: close) | close p99 ms | full handshakes/s (s_time -new) | errors |"
echo "|---|---|---|---|---|---|---|"
for t in "${PROXIES[@]}"; do
  awk -v t="$t" -v a="${M[$t,ka]}" -v b="${M[$t,kap99]}" -v c="${M[$t,cl]}" -v d="${M[$t,clp99]}" -v f="${M[$t,full]}" -v e="${ERRS[$t]}" \
    'BEGIN { printf "| %s | %.0f | %.2f | %.0f | %.2f | %.0f | %d |\n", t, a, b, c, d, f, e }'
done
for ref in nginx haproxy; do
  echo "| sluice/$ref | $(ratio "${M[sluice,ka]}" "${M[$ref,ka]}") | $(ratio "${M[sluice,kap99]}" "${M[$ref,kap99]}") | $(ratio "${M[sluice,cl]}" "${M[$ref,cl]}") | $(ratio "${M[sluice,clp99]}" "${M[$ref,clp99]}") | $(ratio "${M[sluice,full]}" "${M[$ref,full]}") | |"
done
echo
echo "Ratios > 1 favour sluice for rates, < 1 for p99. wrk resumed $wrk_reused of $wrk_total probe reconnects (see above)."
