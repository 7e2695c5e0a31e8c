# Thin wrapper over scripts/ and CMake presets. `make demo` and `make test` work on a fresh
# Debian 12 machine: they install what is missing first.
.PHONY: deps build release test unit e2e demo bench fuzz format clean

PY := /usr/bin/python3
JOBS ?= $(shell nproc)

deps:
	@bash scripts/deps.sh

build: deps
	@cmake --preset debug >/dev/null
	@cmake --build build/debug -j $(JOBS)

release: deps
	@cmake --preset release >/dev/null
	@cmake --build build/release -j $(JOBS) --target sluice

test: build
	@bash scripts/test.sh

unit: build
	@cd build/debug && ctest --output-on-failure

e2e: build
	@SLUICE_BIN=$(CURDIR)/build/debug/sluice $(PY) -m pytest -q tests/e2e

demo: release
	@./build/release/sluice demo --port $${PORT:-8080} --mqtt-port $${MQTT_PORT:-1883}

bench: release
	@bash bench/run.sh

fuzz: deps
	@bash scripts/fuzz.sh $${FUZZ_SECONDS:-60}

format:
	@clang-format -i $$(git ls-files '*.cpp' '*.h')

clean:
	rm -rf build
