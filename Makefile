# ratelimitd: `make run` starts the daemon, `make test` checks everything.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
RUN_STAMP := $(VENV)/.installed-run
# Debian packages the tests use: prometheus + promtool (metrics issue),
# systemd-analyze and systemd-socket-activate (systemd issue); redis-server and redis-cli
# (the redis backend's tests start their own servers); chromium (the status page in a real browser).
# gcc and Python's headers (when this Python lacks them) build the compiled hot path.
DEB_TOOLS := redis-server:redis-server redis-cli:redis-tools prometheus:prometheus promtool:prometheus systemd-analyze:systemd systemd-socket-activate:systemd chromium:chromium gcc:gcc
# The daemon with its hot path compiled by mypyc (tools/compiled.py; docs/design.md, "Compiled").
COMPILED := build/compiled
PY_SOURCES := $(shell find ratelimitd -name '*.py')

.PHONY: run run-interpreted compiled test lint typecheck unit bench fuzz deps deps-compile clean install-systemd

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# Installs only when pyproject.toml changed since the last install (the stamp is older).
$(RUN_STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[fast,compile]'
	touch $(RUN_STAMP)

# The compiled daemon when this machine can build it; else the same daemon, interpreted.
run: $(RUN_STAMP)
	@if $(MAKE) --no-print-directory compiled; then \
	  PYTHONPATH=$(abspath $(COMPILED)) exec $(BIN)/ratelimitd serve; \
	else \
	  echo "running the interpreted daemon (the compiled hot path could not be built)"; \
	  exec $(BIN)/ratelimitd serve; \
	fi

run-interpreted: $(RUN_STAMP)
	$(BIN)/ratelimitd serve

compiled: $(COMPILED)/.built

$(COMPILED)/.built: $(PY_SOURCES) tools/compiled.py
	-@$(MAKE) --no-print-directory deps-compile
	$(BIN)/python tools/compiled.py $(COMPILED)
	touch $@

# Install the Debian packages of $(1) (tool:package pairs) whose tool is absent, and
# Python's headers when this Python lacks them (needs root or sudo).
define install_missing
	@missing=""; for pair in $(1); do \
	  tool=$${pair%%:*}; pkg=$${pair##*:}; \
	  command -v $$tool >/dev/null 2>&1 || missing="$$missing $$pkg"; \
	done; \
	$(PYTHON) -c 'import pathlib, sysconfig; raise SystemExit(not (pathlib.Path(sysconfig.get_paths()["include"]) / "Python.h").exists())' \
	  || missing="$$missing python3-dev"; \
	if [ -n "$$missing" ]; then \
	  sudo_cmd=""; [ "$$(id -u)" -ne 0 ] && sudo_cmd="sudo"; \
	  echo "installing Debian packages:$$missing"; \
	  $$sudo_cmd apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$sudo_cmd apt-get install -y -qq --no-install-recommends $$(echo $$missing | tr ' ' '\n' | sort -u) >/dev/null; \
	fi
endef

deps:
	$(call install_missing,$(DEB_TOOLS))

deps-compile:
	$(call install_missing,gcc:gcc)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP) deps
	$(BIN)/pytest -q

test: deps lint typecheck unit

# Builds the compiled daemon first when it can: the raw-client rows measure it too.
bench: $(STAMP)
	-@$(MAKE) --no-print-directory compiled
	$(BIN)/python -m bench

# The protocol fuzz test of `make test`, with many more (and new) examples: FUZZ_EXAMPLES=N.
FUZZ_EXAMPLES ?= 20000
fuzz: $(STAMP)
	RATELIMITD_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/pytest -q --timeout=0 tests/integration/test_protocol_fuzz.py

install-systemd: $(STAMP)
	$(BIN)/ratelimitd install-systemd --prefix "$(or $(PREFIX),/)"

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache
