#!/usr/bin/env bash
# Cost of JWT authentication: the same upstream route with and without `auth` (RS256, a PEM key,
# plus `allow: { scopes }`), interleaved rounds of wrk -t1 -c64 against one sluice worker.
# Both runs send the same Authorization header, so only the verification path differs.
# Backends: the shared harness's nginx config on 9101-9103. Loopback only; stops what it starts.
#   bench/jwt.sh            ROUNDS=5 DUR=4
set -Eeuo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-5}; DUR=${DUR:-4}
HARNESS=${HARNESS:-$(cd .. && pwd)/shared/bench}
BIN=${BIN:-$PWD/build/release/sluice}
RUN=${BENCH_RUN:-/tmp/sluice-jwt}
mkdir -p "$RUN/tmp"
for p in 9101 9102 9103 9204; do
  if ss -Hltn "sport = :$p" | grep -q .; then echo "port $p busy" >&2; exit 1; fi
done
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true' EXIT

openssl genrsa -out "$RUN/key.pem" 2048 2>/dev/null
openssl rsa -in "$RUN/key.pem" -pubout -out "$RUN/pub.pem" 2>/dev/null
b64() { base64 -w0 | tr '+/' '-_' | tr -d '='; }
h=$(printf '{"alg":"RS256","typ":"JWT"}' | b64)
p=$(printf '{"sub":"alice","scope":"products:read","exp":%d}' $(( $(date +%s) + 3600 )) | b64)
s=$(printf '%s.%s' "$h" "$p" | openssl dgst -sha256 -sign "$RUN/key.pem" | b64)
TOKEN="$h.$p.$s"
cat >"$RUN/sluice.yaml" <<YAML
listen: 127.0.0.1:9204
workers: 1
log: { access: off, error: stderr, level: warn }
auth:
  rs: { jwt: { keys: $RUN/pub.pem, algorithms: [RS256] } }
upstreams:
  backends: [127.0.0.1:9101, 127.0.0.1:9102, 127.0.0.1:9103]
routes:
  - { match: { path: /auth }, upstream: backends, auth: rs, allow: { scopes: [products:read] } }
  - { match: { path: / }, upstream: backends }
YAML

nginx -p "$RUN/" -c "$HARNESS/peers/backends.conf" -g 'daemon off;' >"$RUN/nginx.out" 2>&1 &
PIDS+=($!)
"$BIN" run -c "$RUN/sluice.yaml" 2>"$RUN/sluice.err" &
PIDS+=($!)
for _ in $(seq 50); do curl -fs -o /dev/null "http://127.0.0.1:9204/" && break; sleep 0.1; done
code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" http://127.0.0.1:9204/auth)
[ "$code" = 200 ] || { echo "the token was refused ($code)" >&2; exit 1; }

rps() { wrk -t1 -c64 -d"$DUR"s -H "Authorization: Bearer $TOKEN" "$1" | awk '/Requests\/sec/{print $2}'; }
noauth=(); jwt=()
for r in $(seq "$ROUNDS"); do
  noauth+=("$(rps http://127.0.0.1:9204/)"); jwt+=("$(rps http://127.0.0.1:9204/auth)")
  echo "round $r: no auth ${noauth[-1]} req/s, jwt RS256 + allow ${jwt[-1]} req/s"
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
a=$(median "${noauth[@]}"); b=$(median "${jwt[@]}")
awk -v a="$a" -v b="$b" 'BEGIN { printf "median: no auth %.0f, jwt %.0f req/s = %.1f%%\n", a, b, 100 * b / a }'
