# Two entry points for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DBT    := $(BIN)/dbt
# sample size for the demo; benchmarks pass millions. MERCHANTS empty: one per 400
# transactions (500 for the demo); e.g. MERCHANTS=100000 for a vector index worth having
TRANSACTIONS ?= 200000
MERCHANTS ?=
DBT_FLAGS := --project-dir . --profiles-dir .

.PHONY: install install-test install-bigquery demo demo-bigquery sample-data build sync show test test-fast clean help

help:
	@echo "make demo   - install, generate sample data, dbt build, publish the registry, show it"
	@echo "make test   - install and run the test suite"
	@echo "make test-fast - the tests without the slow (dbt end to end) and reliability groups"
	@echo "make demo-bigquery - the demo on BigQuery, against a local emulator it starts and stops"

# constraints.txt pins the versions the suite last passed with: a fresh resolve of this
# many packages can otherwise backtrack into releases that no longer build.
# The demo needs the base install only (DuckDB, a local lake, SQLite online store); the
# tests also need every extra (S3, GCS, Lance, BigQuery) and the test tools.
$(BIN)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e .
	@touch $@

$(BIN)/.installed-test: $(BIN)/.installed
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[test]"
	@touch $@

install: $(BIN)/.installed

install-test: $(BIN)/.installed-test

$(BIN)/.installed-bigquery: $(BIN)/.installed
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[bigquery]"
	@touch $@

install-bigquery: $(BIN)/.installed-bigquery

sample-data: install
	$(BIN)/python -m sync sample-data --transactions $(TRANSACTIONS) $(if $(MERCHANTS),--merchants $(MERCHANTS))

build: install
	$(DBT) build $(DBT_FLAGS)

sync: install
	$(BIN)/python -m sync

show: install
	$(BIN)/python -m sync show
	$(BIN)/python -m sync sql "select customer_id, event_timestamp, amount_sum_7d, txn_count_30d from customer_spend order by event_timestamp desc, customer_id limit 5"
	$(BIN)/python -m sync lookup customer_id=1   # one customer's online values, as serving reads them
	# point-in-time (historical) lookup: features as known at each transaction, from Python ...
	$(BIN)/python -m sync historical "select transaction_id, customer_id, merchant_id, transaction_ts, is_fraud from stg_transactions order by transaction_ts desc limit 5" --timestamp-column transaction_ts -s fraud_detection_v1 --limit 5
	# ... and the same semantics in SQL: the training set dbt built with the point_in_time_join macro
	$(BIN)/python -m sync sql "select transaction_id, transaction_ts, is_fraud, amount_sum_7d, risk_score, pair_txn_count_30d from fraud_training_set order by transaction_ts desc limit 5"
	# similarity search: the 5 merchants whose latest embeddings are nearest merchant 1's
	$(BIN)/python -m sync search merchant_embedding:embedding --entity merchant_id=1 -k 5 --features model_version
	# operating it: freshness per view, and a check that online values equal the lake's point-in-time values
	$(BIN)/python -m sync status
	$(BIN)/python -m sync verify --sample 200

demo: sample-data build sync show

# the same job on BigQuery: bqemulator (its own venv, tests/bigquery/setup.sh) stands in for it
BQ_TRANSACTIONS ?= 50000
demo-bigquery: install-bigquery
	bash tests/bigquery/setup.sh
	$(BIN)/python tests/bigquery/demo.py --transactions $(BQ_TRANSACTIONS)

test: install-test
	$(BIN)/python -m pytest

# for development: skips the groups marked slow (real dbt runs) and reliability (faults, kill -9)
test-fast: install-test
	$(BIN)/python -m pytest -m "not slow and not reliability"

clean:
	rm -rf target logs lake feature_store.duckdb .demo-bigquery
