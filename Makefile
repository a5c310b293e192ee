# Convenience wrapper around meson. `make demo` and `make test` are the README's commands.
BUILD ?= build
TESTBUILD ?= build-test
MESON_TEST_ARGS ?=

.PHONY: all deps build demo test unit perf-guard clean

all: build

deps:
	./scripts/install-deps.sh

$(BUILD)/build.ninja:
	meson setup $(BUILD) --buildtype=release -Db_ndebug=if-release

build: deps $(BUILD)/build.ninja
	ninja -C $(BUILD)

demo: build
	./scripts/demo.sh $(BUILD)

# The test build runs under ASan + UBSan; every unit, fuzz-corpus and lab test runs.
$(TESTBUILD)/build.ninja:
	meson setup $(TESTBUILD) -Db_sanitize=address,undefined -Db_lundef=false

test: deps $(TESTBUILD)/build.ninja $(BUILD)/build.ninja
	ninja -C $(BUILD)  # the release build the demo uses must stay warning-free too
	ninja -C $(TESTBUILD)
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
		meson test -C $(TESTBUILD) --print-errorlogs $(MESON_TEST_ARGS)

unit: deps $(TESTBUILD)/build.ninja
	ninja -C $(TESTBUILD)
	meson test -C $(TESTBUILD) --print-errorlogs --suite unit

# Instruction count of the HBONE path under callgrind vs perf/guard/baseline.json (> 5 % fails).
perf-guard: deps $(BUILD)/build.ninja
	./perf/guard.sh $(BUILD)

clean:
	rm -rf $(BUILD) $(TESTBUILD)
