# mlgate: the two commands (`make demo`, `make test`) and the checks.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | $(PYTHON) -c "import hashlib,sys;print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest()[:12])")
PG_BIN := /usr/lib/postgresql/15/bin
ARGS ?=

.PHONY: demo test check venv system-deps clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $@

venv: $(STAMP)

# System packages the test suite uses: the PostgreSQL 15 server binaries for the migration test.
# Installed only where missing and where this user may install them; otherwise those tests skip
# and say why.
system-deps:
	@if [ ! -x $(PG_BIN)/initdb ] && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		echo "installing PostgreSQL 15 server binaries"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-15 >/dev/null) \
		|| echo "could not install postgresql-15: the PostgreSQL tests will skip"; \
	fi

demo: venv
	$(BIN)/mlgate demo $(ARGS)

test: venv system-deps
	$(BIN)/pytest -n 2 $(ARGS)

check: venv
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
