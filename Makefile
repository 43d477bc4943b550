# creditgate: `make dev` runs everything locally, `make test` runs the suite.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python

.PHONY: dev test bench lint install clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@# No PostgreSQL server binaries on this machine: use the ones the pgserver package ships.
	@command -v pg_ctl >/dev/null || ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 \
		|| $(PY) -m pip install -q pgserver
	touch $@

install: $(VENV)/.installed

# Stopped by Ctrl-C (130) or SIGTERM (143) is how a dev server ends, not an error.
dev: install
	@$(VENV)/bin/creditgate dev; status=$$?; [ $$status -eq 130 ] || [ $$status -eq 143 ] || exit $$status

test: install
	$(PY) -m pytest

bench: install
	$(PY) bench/run.py

lint: install
	$(VENV)/bin/ruff check functions tests bench
	$(VENV)/bin/ruff format --check functions tests bench

clean:
	rm -rf $(VENV) .creditgate
