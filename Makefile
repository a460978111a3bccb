# Every target creates what it needs: the virtual environment, Debian packages, test certificates.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck bench clean system-deps

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

# softhsm2 (PKCS#11 tests), nginx (the server benchmark's baseline and the operator guide's
# proxy test), openssl (certificates), wrk (load generator) and faketime (a controlled clock for
# the device in the freeze attacks) come from Debian.
system-deps:
	@if ! command -v softhsm2-util >/dev/null || [ ! -x /usr/sbin/nginx ] || ! command -v openssl >/dev/null || ! command -v wrk >/dev/null || ! command -v faketime >/dev/null; then \
		if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
		$$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q softhsm2 nginx openssl wrk faketime; \
	fi

demo: $(STAMP) system-deps
	$(BIN)/python scripts/demo.py

test: $(STAMP) system-deps
	$(BIN)/ruff check repository client scripts tests bench
	$(BIN)/ruff format --check --quiet repository client scripts tests bench
	$(BIN)/mypy
	$(BIN)/pytest -q -p no:cacheprovider

bench: $(STAMP) system-deps
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) build *.egg-info
