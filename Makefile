# creditgate: `make dev` runs everything locally, `make test` runs the suite.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python

.PHONY: dev test bench lint install constraints clean

# Installed at the versions in constraints.txt, so every fresh clone tests what passed here.
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
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

# The newest releases of every dependency, written to constraints.txt; then `make test`.
constraints:
	rm -rf .venv-latest
	$(PYTHON) -m venv .venv-latest
	.venv-latest/bin/python -m pip install -q --upgrade pip
	.venv-latest/bin/python -m pip install -q -e '.[test]'
	{ sed -n '/^#/p' constraints.txt; .venv-latest/bin/python -m pip freeze --exclude-editable; } > constraints.txt.new
	mv constraints.txt.new constraints.txt
	rm -rf .venv-latest
	@echo "constraints.txt refreshed: run make test, then commit it"

clean:
	rm -rf $(VENV) .creditgate
