# Everything runs from a local virtualenv so a fresh machine needs only
# Python 3.11+ and make.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed

.PHONY: demo test bench install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m supervisor.demo

test: $(STAMP)
	$(PY) -m pytest

# loky is measured against, never a runtime dependency: installed here only.
bench: $(STAMP)
	$(PY) -m pip install --quiet loky
	$(PY) -m bench.run

clean:
	rm -rf $(VENV) build *.egg-info

# Developer checks; the tools are installed here, never runtime dependencies.
# Both run even when the first fails, so one pass shows everything.
.PHONY: lint
lint: $(STAMP)
	$(PY) -m pip install --quiet mypy ruff types-psutil
	@status=0; \
	$(PY) -m mypy --strict supervisor workers || status=1; \
	$(PY) -m ruff check supervisor workers tests || status=1; \
	exit $$status

# Install phalanxd as a systemd service (run as root): a venv in PREFIX,
# /etc/phalanx/phalanx.toml if absent, the unit in /etc/systemd/system.
# docs/OPERATIONS.md; e.g. `make install-systemd PREFIX=/srv/phalanx`, or
# `make install-systemd INSTALL_ARGS=--dry-run` to see the steps first.
PREFIX       ?= /opt/phalanx
INSTALL_ARGS ?=
.PHONY: install-systemd
install-systemd:
	sh systemd/install.sh --prefix '$(PREFIX)' --python '$(PYTHON)' $(INSTALL_ARGS)
