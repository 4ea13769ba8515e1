# The two commands in the README, and the pieces they are made of. Each target does its own
# set-up (scripts/bootstrap is quiet and quick when nothing is missing).
UNIRUN_CACHE ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/unirun
export UNIRUN_CACHE
MANIFEST := $(UNIRUN_CACHE)/runtimes.txt
BUILD := build
PYTEST_PYTHON = $(UNIRUN_CACHE)/runtimes/cp313/bin/python3.13

# make install PREFIX=DIR (default /usr/local; DESTDIR=STAGE for packagers): the launcher in
# PREFIX/bin, what it loads in PREFIX/lib/unirun (docs/launcher.md). The runtimes stay where
# scripts/bootstrap put them (UNIRUN_CACHE).
PREFIX ?= /usr/local

.PHONY: all bootstrap build install test test-cpp test-python stress demo bench parity realworld matrix clean sanitize sanitize-build

all: build

bootstrap:
	@scripts/bootstrap

# meson reads the manifest at configure time: reconfigure when it changes.
build: bootstrap
	@if [ ! -f $(BUILD)/build.ninja ]; then \
		meson setup $(BUILD) -Druntime_manifest=$(MANIFEST) >/dev/null; \
	elif ! cmp -s $(MANIFEST) $(BUILD)/.manifest-seen; then \
		meson setup --reconfigure $(BUILD) -Druntime_manifest=$(MANIFEST) >/dev/null; \
	fi
	@cp $(MANIFEST) $(BUILD)/.manifest-seen
	@meson compile -C $(BUILD) >/dev/null || meson compile -C $(BUILD)
	@# Byte-compile the shims for every runtime: workers then load them without compiling,
	@# which also keeps each subinterpreter worker small (compiler memory stays in its arenas).
	@for python in $$(awk '!/^#/ {print $$2}' $(MANIFEST)); do \
		$$python -m compileall -q stdlib-shims bench >/dev/null || exit 1; done

install: build
	@case "$(PREFIX)" in /*) ;; *) echo "make install: PREFIX must be an absolute path (got '$(PREFIX)')" >&2; exit 2;; esac
	@meson configure $(BUILD) "-Dprefix=$(PREFIX)" >/dev/null
	@meson install -C $(BUILD) --quiet >$(BUILD)/install.log 2>&1 || { cat $(BUILD)/install.log; exit 1; }
	@echo "installed $(DESTDIR)$(PREFIX)/bin/unirun-python"

test-cpp: build
	meson test -C $(BUILD) --print-errorlogs

test-python: build
	$(PYTEST_PYTHON) -m pytest tests/python tests/cli

# Every test: C++ unit tests, the Python-level suites and the sanitizer stage, one summary line
# at the end.
test: build sanitize-build
	@scripts/run-tests

# Futures under load in both thread modes (tests/stress/stress.py): many submitting threads,
# random cancels, shutdown from another thread, waits without timeout under a watchdog.
# STRESS_SIZE=small is what make test runs; medium and large are for runs by hand.
STRESS_SIZE ?= medium
stress: build
	@status=0; for mode in gil nogil; do \
		$(BUILD)/unirun-python --thread-mode=$$mode tests/stress/stress.py --size $(STRESS_SIZE) || status=1; \
	done; exit $$status

demo: build
	@examples/run-demo

clean:
	rm -rf $(BUILD) $(BUILD_ASAN) $(BUILD_TSAN)

# Sanitizer builds, each in its own directory (docs/architecture.md, "Sanitizers"): build-asan
# under ASan+UBSan (float-cast-overflow included, every report fatal), build-tsan under TSan.
# Each launcher is linked with its sanitizer's runtime, so the runtime library it dlopens can be
# instrumented although libpython is not.
BUILD_ASAN := build-asan
BUILD_TSAN := build-tsan
ASAN_MESON_OPTIONS := -Db_sanitize=address,undefined \
	"-Dcpp_args=-fsanitize=float-cast-overflow -fno-sanitize-recover=all -D_GLIBCXX_ASSERTIONS"
TSAN_MESON_OPTIONS := -Db_sanitize=thread

# $(call sanitizer_build,DIR,MESON-OPTIONS): configure once (again when the runtime manifest or
# the options change), then compile.
define sanitizer_build
	@options='$(2)'; \
	if [ ! -f $(1)/build.ninja ]; then \
		meson setup $(1) -Druntime_manifest=$(MANIFEST) $(2) >/dev/null; \
	elif ! cmp -s $(MANIFEST) $(1)/.manifest-seen || [ "$$(cat $(1)/.options-seen 2>/dev/null)" != "$$options" ]; then \
		meson setup --reconfigure $(1) -Druntime_manifest=$(MANIFEST) $(2) >/dev/null; \
	fi && cp $(MANIFEST) $(1)/.manifest-seen && echo "$$options" >$(1)/.options-seen
	@meson compile -C $(1) >/dev/null || meson compile -C $(1)
endef

sanitize-build: build
	$(call sanitizer_build,$(BUILD_ASAN),$(ASAN_MESON_OPTIONS))
	$(call sanitizer_build,$(BUILD_TSAN),$(TSAN_MESON_OPTIONS))

# The sanitizer stage alone (scripts/run-tests --sanitize): the C++ tests under ASan+UBSan and
# under TSan; the Python suites under the ASan launcher in both thread modes, and the native
# executor tests under the TSan launcher in GIL mode.
sanitize: sanitize-build
	@scripts/run-tests --sanitize

# Benchmarks: ratios against the standard library and peers, side by side (bench/run.py).
bench: build
	@$(PYTEST_PYTHON) bench/run.py

# CPython's own test_concurrent_futures and test_asyncio under the launcher, compat managed,
# on both runtimes (cpython-parity/run.py); writes build/parity/summary.json.
parity: build
	@$(PYTEST_PYTHON) cpython-parity/run.py

# Third-party packages' own test suites (anyio, aiofiles, tqdm, dask) under each runtime's python
# and under the launcher, compared test by test (realworld/run.py); the pinned packages go into
# venvs under $(UNIRUN_CACHE)/realworld; writes build/realworld/summary.json.
realworld: build
	@$(PYTEST_PYTHON) realworld/run.py

# Every runtime there is: cp313 and cp313t, Debian's python3.11 (cp311), a python3.12 where one
# is present (cp312), and CPython 3.14 and 3.15 from a Debian sid root (cp314, cp315; built and
# run inside it). The Python suites and CPython's suites on each (scripts/matrix); writes
# build/matrix/summary.json. The first run makes the sid root (a few minutes).
# MATRIX_FLAGS: scripts/matrix's options, e.g. --runtimes cp314 cp315, or --skip-cached (CI).
matrix: build
	@scripts/bootstrap --matrix
	@$(PYTEST_PYTHON) scripts/matrix $(MATRIX_FLAGS)
