# Two commands for a newcomer: `make demo` and `make test`. Each builds .venv itself.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Quiet installs: -qq keeps pip's errors and drops its notices, which on some machines are
# warnings about their own pip configuration (index locations that do not exist);
# setuptools' note on every editable install (a BuildBackendWarning) says nothing here.
PIP := PYTHONWARNINGS="ignore:Editable installation" $(BIN)/python -m pip install -qq

.PHONY: venv demo activate test lint unit compat bench fuzz clean redis-server chromium

venv: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "dagrelay needs Python 3.11+")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing dagrelay and its dev tools into $(VENV)"
	@$(PIP) --upgrade pip
	@$(PIP) -e '.[dev]'
	touch $(STAMP)

demo: venv
	$(BIN)/dagrelay run examples.flows:user_report --input '{"user_ids": [1, 2, 3]}'
	@echo "dagrelay is installed in .venv: run 'source .venv/bin/activate' to use it (or see: make activate)"

# The command that puts .venv's `dagrelay` on PATH (make cannot change your shell's PATH).
activate:
	@echo "source $(VENV)/bin/activate   # then: dagrelay --help; 'deactivate' to leave"

lint: venv
	$(BIN)/ruff check executor workers tests examples benchmarks
	$(BIN)/ruff format --check executor workers tests examples benchmarks
	$(BIN)/mypy executor workers

# The tests start their own redis-server on a free port; make sure the binary exists.
redis-server:
	@command -v redis-server >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's redis-server for the tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; \
	  else \
	    echo "error: redis-server is needed by the tests: install it (apt-get install redis-server)"; exit 1; \
	  fi; }

# The timeline test renders the report page in headless Chromium and reads the screenshot.
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's chromium for the tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "error: chromium is needed by the tests: install it (apt-get install chromium)"; exit 1; \
	  fi; }

unit: venv redis-server chromium
	$(BIN)/python -m pytest

test: lint unit compat

# The lowest supported dramatiq and redis-py (constraints/lowest.txt) in a second venv, and
# the suites that use their internals on it: Dramatiq's consumer, dispatch script and worker
# processes, redis-py's connections and Sentinel pool (README: Supported versions).
COMPAT_VENV := .venv-compat
COMPAT_STAMP := $(COMPAT_VENV)/.installed
COMPAT_TESTS := tests/test_supported_versions.py tests/conformance tests/test_distributed.py \
	tests/test_lua_core.py tests/test_wakeup.py tests/test_redis_store.py \
	tests/test_supervisor_unit.py tests/test_sentinel_connections.py tests/faults/test_failover.py \
	tests/faults/test_workers.py

$(COMPAT_STAMP): pyproject.toml constraints/lowest.txt
	test -x $(COMPAT_VENV)/bin/python || $(PYTHON) -m venv $(COMPAT_VENV)
	PYTHONWARNINGS="ignore:Editable installation" $(COMPAT_VENV)/bin/python -m pip install -qq --upgrade pip
	PYTHONWARNINGS="ignore:Editable installation" $(COMPAT_VENV)/bin/python -m pip install -qq -e '.[dev]' -c constraints/lowest.txt
	touch $(COMPAT_STAMP)

compat: $(COMPAT_STAMP) redis-server
	DAGRELAY_LOWEST=1 $(COMPAT_VENV)/bin/python -m pytest $(COMPAT_TESTS)

# The nightly soak of the differential fuzz (make test runs its fixed list): 1,000
# generated flows on the embedded backend and 1,000 on real workers (threads and
# --async-steps); a mismatch prints its seed (DAGRELAY_FUZZ_SEED=N replays it).
FUZZ_COUNT ?= 1000
fuzz: venv redis-server
	$(BIN)/python -m tests.differential --count $(FUZZ_COUNT) --backend embedded --known ""
	$(BIN)/python -m tests.differential --count $(FUZZ_COUNT) --backend distributed --known ""

# The bench's peers (Dask, Celery) come from the `bench` extra, installed beside `dev`.
BENCH_STAMP := $(VENV)/.installed-bench

$(BENCH_STAMP): $(STAMP) pyproject.toml
	@echo "installing the bench's peers into $(VENV)"
	@$(PIP) -e '.[dev,bench]'
	touch $(BENCH_STAMP)

# `make bench ARGS="--quick"` or `ARGS="--only cpu,sleeps"`: see python -m benchmarks -h
bench: $(BENCH_STAMP) redis-server
	$(BIN)/python -m benchmarks $(ARGS)

clean:
	rm -rf $(VENV) $(COMPAT_VENV) .pytest_cache .mypy_cache .ruff_cache
