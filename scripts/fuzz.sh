#!/usr/bin/env bash
# Builds the libFuzzer targets with clang and runs each for a bounded time over its seed corpus.
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET]   (default 60). New crashes land in build/fuzz/.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
cmake --preset fuzz >/dev/null
cmake --build build/fuzz --target http1_parser_fuzz config_fuzz jwt_fuzz mqtt_codec_fuzz xml_json_fuzz \
  h2_session_fuzz proxy_protocol_fuzz
for t in http1_parser config jwt mqtt_codec xml_json h2_session proxy_protocol; do
  bin=build/fuzz/${t}_fuzz
  [ -x "$bin" ] || continue
  corpus=tests/fuzz/corpus/$t
  work=build/fuzz/corpus-$t
  mkdir -p "$work"
  maxlen=4096
  [ "$t" = h2_session ] && maxlen=16384  # whole HTTP/2 exchanges
  echo "== fuzz $t for ${secs}s"
  "$bin" -max_total_time="$secs" -max_len="$maxlen" -artifact_prefix=build/fuzz/"$t"- "$work" "$corpus"
done
