#!/usr/bin/env bash
# Everything `make test` runs: unit tests (ctest), config examples, end-to-end tests (pytest),
# all against the ASan+UBSan debug build.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$PWD/build/debug/sluice
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

echo "== unit tests (ctest)"
(cd build/debug && ctest --output-on-failure -j 2)

echo "== examples validate"
for f in examples/*.yaml; do
  [ -e "$f" ] || continue
  "$BIN" validate -c "$f"
done

echo "== end-to-end tests (pytest)"
SLUICE_BIN=$BIN /usr/bin/python3 -m pytest -q -p no:cacheprovider tests/e2e
