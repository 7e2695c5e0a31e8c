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
export SLUICE_BIN=$BIN
PYTEST=(/usr/bin/python3 -m pytest -q -rf -o cache_dir=build/.pytest_cache tests/e2e)
if ! "${PYTEST[@]}"; then
  # The suite runs real servers on a shared 2-core machine; a timing-bound test can lose a race
  # now and then. The failures above stay in the log; only they are run once more, and a real
  # bug fails again and fails the run.
  echo "== re-running only the failed end-to-end tests once"
  "${PYTEST[@]}" --lf
fi
