# mlgate: the two commands (`make demo`, `make test`), the checks and the longer fuzz run.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | $(PYTHON) -c "import hashlib,sys;print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest()[:12])")
PG_BIN := /usr/lib/postgresql/15/bin
ARGS ?=

.PHONY: demo test check fuzz venv system-deps clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $@

venv: $(STAMP)

# System packages the test suite uses: the PostgreSQL 15 server binaries for the migration test, `wrk` for
# the load tests, Chromium and its driver for the web UI's browser test, Prometheus for `promtool` (the
# shipped alerting rules and real scrapes of both /metrics checked). Installed only where missing and where
# this user may install them (one apt-get call); otherwise those tests skip and say why.
system-deps:
	@missing=""; \
	[ -x $(PG_BIN)/initdb ] || missing="$$missing postgresql-15"; \
	command -v wrk >/dev/null || missing="$$missing wrk"; \
	[ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	[ -x /usr/bin/chromedriver ] || missing="$$missing chromium-driver"; \
	[ -x /usr/bin/promtool ] || missing="$$missing prometheus"; \
	if [ -n "$$missing" ] && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		echo "installing:$$missing"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null) \
		|| echo "could not install$$missing: the tests that need them will skip"; \
	fi

demo: venv
	$(BIN)/mlgate demo $(ARGS)

test: venv system-deps
	$(BIN)/pytest -n 2 --dist loadfile --durations=25 $(ARGS)

# The suite's fuzz tests, longer: EXAMPLES per API operation (every person on each, on the staged world),
# 2000 per parser and config test, fresh examples each run.
EXAMPLES ?= 50
fuzz: venv
	FUZZ_EXAMPLES=$(EXAMPLES) $(BIN)/pytest -s -p no:cacheprovider --durations=10 $(ARGS) \
		tests/api/test_fuzz_api.py tests/unit/test_fuzz_scoring_payloads.py tests/unit/test_fuzz_config.py

check: venv
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
