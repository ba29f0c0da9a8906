# Two entry points for a fresh clone: `make run` and `make test`. Both set up .venv themselves.
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
comma := ,

.PHONY: run test fuzz check clean mutation bench-overhead bench-backends bench-mixed bench-imbalance bench-reload bench-idle bench-soak bench-discovery

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
FUZZ_TESTS := tests/differential tests/test_framing_properties.py tests/test_config_bytes.py \
	tests/test_routing_differential.py tests/test_routed_path.py tests/test_properties.py \
	tests/test_report_properties.py tests/test_costs.py tests/test_access_log.py
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
