#!/usr/bin/env bash
# Installs every Debian package sluice needs to build, test, demo and benchmark.
# Idempotent and quick when everything is present: apt is only called for what is missing.
set -euo pipefail

BUILD_PKGS=(
  build-essential cmake ninja-build ccache pkg-config clang libclang-rt-14-dev
  libboost1.81-dev libboost-json1.81-dev libboost-url1.81-dev
  libssl-dev libnghttp2-dev libyaml-cpp-dev libre2-dev libhiredis-dev libpugixml-dev
  libcli11-dev libfmt-dev libspdlog-dev libcrypt-dev zlib1g-dev libbrotli-dev libmimalloc-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  libjs-dygraphs
)
TEST_PKGS=(
  python3 python3-pytest python3-httpx python3-requests python3-jwt python3-cryptography
  python3-redis python3-prometheus-client curl wrk nginx-light haproxy redis-server redis-tools procps
  chromium chromium-driver python3-selenium
  python3-paho-mqtt python3-websockets python3-h2 python3-grpcio python3-grpc-tools
  mosquitto-clients nghttp2-client iperf3
)

want=("${BUILD_PKGS[@]}")
if [ "${1:-}" != "--build-only" ]; then want+=("${TEST_PKGS[@]}"); fi

missing=()
for p in "${want[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "deps: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian starts services on install; tests start their own instances on private ports.
for svc in nginx redis-server haproxy; do
  if command -v systemctl >/dev/null && systemctl is-active --quiet "$svc" 2>/dev/null; then
    $SUDO systemctl stop "$svc" || true
  fi
done
echo "deps: done"
