# Mini PaaS — developer entry points. `make help` lists them.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
# Tools run from the venv even when it is not activated.
export PATH := $(BIN):$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg

# Roles with a Molecule scenario (paas_contract, vars only, has none).
ROLES := $(sort $(patsubst roles/%/molecule/default/molecule.yml,%,$(wildcard roles/*/molecule/default/molecule.yml)))
TF_ENVS := $(sort $(notdir $(wildcard terraform/*)))

.PHONY: help setup lint test test-unit test-integration test-molecule bench demo clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

setup: $(BIN)/python ## Create .venv with every runtime and development dependency
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .

lint: ## yamllint, ansible-lint, syntax checks, ruff, mypy, terraform fmt/validate
	yamllint --strict .
	ansible-lint --offline --strict playbooks roles
	for p in playbooks/*.yml; do ansible-playbook --syntax-check "$$p" >/dev/null; done
	ruff check .
	ruff format --check .
	mypy
	@if [ -n "$(TF_ENVS)" ]; then bash tests/terraform-check.sh; fi

test-unit: ## Fast tests: no Docker; tests/roles reads the roles' YAML and runs ansible-playbook for seconds
	pytest tests/unit tests/roles

test-integration: ## Real dockerd, nginx, sshd, terraform, ansible-runner (needs root)
	pytest -m integration tests/integration

test-molecule: ## molecule test in every role (against this machine)
	@# reset: a scenario's state from an earlier run (e.g. "prepared") must not skip a step of this one.
	@for r in $(ROLES); do echo "== molecule test: $$r"; (cd roles/$$r && molecule reset >/dev/null && molecule test) || exit 1; done

test: lint test-unit test-integration test-molecule ## Everything CI runs: lint, unit, integration, Molecule

demo: setup ## Start the API, provision this machine, deploy the offline example through the API (root)
	bash examples/demo.sh

bench: ## Print deploy timings against hand-run git + docker steps
	$(BIN)/python bench/deploy_bench.py

clean: ## Remove caches (keeps .venv)
	rm -rf .pytest_cache .mypy_cache .ruff_cache
