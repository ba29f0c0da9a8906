# Two entry points for a fresh clone: `make run` and `make test`. Both set up .venv themselves.
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
comma := ,

.PHONY: run test fuzz check clean mutation bench-overhead bench-backends bench-mixed bench-imbalance \
	bench-reload bench-idle bench-soak bench-discovery image compose-up compose-down

$(BIN)/python:
	@py=$$(sh scripts/find-python.sh) && echo "using $$py" && "$$py" -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/python -m backends.stack -c config/balancer.yaml

test: $(STAMP)
	$(BIN)/ruff check balancer backends tests bench
	$(BIN)/mypy
	@# under CI a missing chromium or dnsmasq fails here (and their tests would fail): nothing
	@# skips silently
	@case "$${CI:-}" in ""|0|false|no) sh scripts/ensure-debs.sh chromium:chromium || \
	  echo "note: no chromium: the status page tests skip (and fail under CI=true)";; \
	  *) sh scripts/ensure-debs.sh chromium:chromium;; esac
	@case "$${CI:-}" in ""|0|false|no) sh scripts/ensure-debs.sh dnsmasq:dnsmasq-base || \
	  echo "note: no dnsmasq: the DNS discovery tests skip (and fail under CI=true)";; \
	  *) sh scripts/ensure-debs.sh dnsmasq:dnsmasq-base;; esac
	$(BIN)/python -m pytest -q

# Mutation testing of the pure core (config in pyproject.toml [tool.mutmut]); slow, not in
# `make test`. Each mutant runs only the unit tests that cover the function it mutates.
# MODULES=costs,health limits it to some modules; the summary goes to bench/results/.
mutation: $(STAMP)
	$(BIN)/python -m pip install -q -e '.[mutation]'
	rm -rf mutants
	$(BIN)/mutmut run $(if $(MODULES),$(foreach m,$(subst $(comma), ,$(MODULES)),"balancer.$(m).*"))
	$(BIN)/mutmut results --all true > mutants/results.txt
	$(BIN)/python bench/mutation/summary.py mutants/results.txt

# Every property test with thousands of examples (HYPOTHESIS_PROFILE=fuzz; the differential
# suites take FUZZ_EXAMPLES, default 5000); failures found are kept in $$HYPOTHESIS_DB
# (default: the temporary directory). Not in `make test`; takes an hour or more.
FUZZ_TESTS := tests/differential tests/integration/test_framing_properties.py tests/e2e/test_config_bytes.py \
	tests/e2e/test_routing_differential.py tests/unit/test_routed_path.py tests/unit/test_properties.py \
	tests/integration/test_report_properties.py tests/unit/test_costs.py tests/unit/test_access_log.py
fuzz: $(STAMP)
	HYPOTHESIS_PROFILE=fuzz $(BIN)/python -m pytest -q $(FUZZ_TESTS) -p no:randomly --timeout=0

check: $(STAMP)
	$(BIN)/python -m balancer check -c config/balancer.yaml

bench-overhead: $(STAMP)
	$(BIN)/python bench/overhead/run.py

bench-backends: $(STAMP)
	$(BIN)/python bench/backends/run.py

bench-imbalance: $(STAMP)
	$(BIN)/python bench/imbalance/run.py

bench-mixed: $(STAMP)
	$(BIN)/python -m pip install -q -e '.[bench]'
	$(BIN)/python bench/mixed/run.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

bench-reload: $(STAMP)
	$(BIN)/python bench/reload/run.py

bench-idle: $(STAMP)
	$(BIN)/python bench/idle/run.py

bench-soak: $(STAMP)
	$(BIN)/python bench/soak/run.py

bench-discovery: $(STAMP)
	@sh scripts/ensure-debs.sh dnsmasq:dnsmasq-base
	$(BIN)/python bench/discovery/run.py

# -- container images and the Compose stack (README, Deploying) ------------------------------
# ENGINE=docker works too. BASE: the image both Dockerfiles start FROM; when it can be neither
# found nor pulled (no registry reachable), deploy/base-image.sh builds LOCAL_BASE from Debian
# packages (debootstrap, Python 3.13) and that is used instead.
ENGINE ?= podman
BASE ?= python:3.12-slim
LOCAL_BASE ?= localhost/echonext-base:trixie
# docker compose where there is one, else podman-compose from PyPI (Debian 12's 1.0.3 cannot
# run deployment.yml: it mangles CMD health checks)
COMPOSE ?= $(shell if docker compose version >/dev/null 2>&1; then echo "docker compose"; \
	else echo $(BIN)/podman-compose; fi)

image:
	@if [ "$(ENGINE)" = podman ]; then sh deploy/podman-setup.sh; fi
	@base="$(BASE)"; \
	if ! $(ENGINE) image inspect "$$base" >/dev/null 2>&1 \
	   && ! timeout 120 $(ENGINE) pull -q "$$base" >/dev/null 2>&1; then \
	    echo "cannot pull $$base: using $(LOCAL_BASE), built from Debian packages"; \
	    sh deploy/base-image.sh "$(LOCAL_BASE)" || exit 1; base="$(LOCAL_BASE)"; \
	fi; \
	$(ENGINE) build --build-arg BASE="$$base" -t echonext-balancer:latest -f Dockerfile . \
	&& $(ENGINE) build --build-arg BASE="$$base" -t echonext-backend:latest \
	    -f Dockerfile.backend . \
	&& $(ENGINE) run --rm echonext-balancer:latest python -c \
	    "import importlib.util as u, sys; sys.exit(u.find_spec('pyechonext') is not None)" \
	&& echo "images echonext-balancer:latest (no pyechonext) and echonext-backend:latest built"

COMPOSE_TOOL := $(if $(findstring podman-compose,$(COMPOSE)),$(BIN)/podman-compose)
$(BIN)/podman-compose: $(STAMP)
	$(BIN)/python -m pip install -q 'podman-compose>=1.2'

# SCALE=3: replicas of the async backend (default: deploy.replicas), discovered by DNS, no
# YAML edit. (podman-compose 1.6 then runs one replica of every other service.)
SCALE ?=
compose-up: image $(COMPOSE_TOOL)
	$(COMPOSE) -f deployment.yml up -d $(if $(SCALE),--scale async=$(SCALE))

# podman-compose's down leaves the replicas past the first of a scaled service running
compose-down: $(COMPOSE_TOOL)
	$(COMPOSE) -f deployment.yml down
	@if [ "$(ENGINE)" = podman ]; then \
	    ids=$$(podman ps -aq --filter label=io.podman.compose.project=echonext); \
	    [ -z "$$ids" ] || podman rm -f $$ids >/dev/null; \
	    podman network rm -f echonext_default >/dev/null 2>&1 || true; fi
