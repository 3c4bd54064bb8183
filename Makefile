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

# Byte-compile our own modules, as pip does for a regular (non-editable)
# install: an editable install runs them from the source tree, and with
# PYTHONDONTWRITEBYTECODE set every process would compile them again at
# import (~130 ms before the first Pool). Up-to-date files are skipped, so
# demo, test and bench run it every time: an edited module is compiled once.
install: $(STAMP)
	$(PY) -m compileall -q supervisor workers

demo: install
	$(PY) -m supervisor.demo

test: install test-deps
	$(PY) -m pytest

# What the tests drive besides our code: Debian's chromium and its driver
# for the status page (installed only when missing and we are root, as in
# CI; otherwise those tests skip and say why), and the stock supervisorctl
# in a venv of its own (its import name, `supervisor`, is ours too).
.PHONY: test-deps browser supervisorctl
test-deps: browser supervisorctl

browser:
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then \
		:; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			chromium chromium-driver; \
	else \
		echo "note: chromium/chromium-driver missing and not root: browser tests will skip"; \
	fi

supervisorctl: $(VENV)/supervisorctl/bin/supervisorctl

$(VENV)/supervisorctl/bin/supervisorctl: $(STAMP)
	$(PY) -m tests.supervisorctl_venv

# loky is measured against, never a runtime dependency: installed here only.
bench: install
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
