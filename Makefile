# Two entry points for a fresh clone: `make run` and `make test`. Both set up .venv themselves.
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test check clean bench-overhead bench-backends bench-mixed bench-imbalance bench-reload bench-idle bench-soak bench-discovery

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
	@sh scripts/ensure-debs.sh chromium:chromium || echo "note: no chromium: the status page tests skip (and fail under CI=true)"
	@sh scripts/ensure-debs.sh dnsmasq:dnsmasq-base || echo "note: no dnsmasq: the DNS discovery tests skip (and fail under CI=true)"
	$(BIN)/python -m pytest -q

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
