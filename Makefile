# ratelimitd: `make run` starts the daemon, `make test` checks everything.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
RUN_STAMP := $(VENV)/.installed-run
# Debian packages the tests use: prometheus + promtool (metrics issue),
# systemd-analyze and systemd-socket-activate (systemd issue); redis-server and redis-cli
# (the redis backend's tests start their own servers); chromium (the status page in a real browser).
DEB_TOOLS := redis-server:redis-server redis-cli:redis-tools prometheus:prometheus promtool:prometheus systemd-analyze:systemd systemd-socket-activate:systemd chromium:chromium

.PHONY: run test lint typecheck unit bench fuzz deps clean install-systemd

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# Installs only when pyproject.toml changed since the last install (the stamp is older).
$(RUN_STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[fast]'
	touch $(RUN_STAMP)

run: $(RUN_STAMP)
	$(BIN)/ratelimitd serve

# Install missing Debian packages only when a tool is absent (needs root or sudo).
deps:
	@missing=""; for pair in $(DEB_TOOLS); do \
	  tool=$${pair%%:*}; pkg=$${pair##*:}; \
	  command -v $$tool >/dev/null 2>&1 || missing="$$missing $$pkg"; \
	done; \
	if [ -n "$$missing" ]; then \
	  sudo_cmd=""; [ "$$(id -u)" -ne 0 ] && sudo_cmd="sudo"; \
	  echo "installing Debian packages:$$missing"; \
	  $$sudo_cmd apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$sudo_cmd apt-get install -y -qq --no-install-recommends $$(echo $$missing | tr ' ' '\n' | sort -u) >/dev/null; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP) deps
	$(BIN)/pytest -q

test: deps lint typecheck unit

bench: $(STAMP)
	$(BIN)/python -m bench

# The protocol fuzz test of `make test`, with many more (and new) examples: FUZZ_EXAMPLES=N.
FUZZ_EXAMPLES ?= 20000
fuzz: $(STAMP)
	RATELIMITD_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/pytest -q --timeout=0 tests/integration/test_protocol_fuzz.py

install-systemd: $(STAMP)
	$(BIN)/ratelimitd install-systemd --prefix "$(or $(PREFIX),/)"

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache
