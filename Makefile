# Set-up and everyday commands. `make run` starts the exchange; `make test` runs the tests.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python

.PHONY: install run test lint bench clean

$(PY):
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip wheel setuptools

install: $(PY)
	$(PY) -m pip install -q -e '.[test]'

# The exchange, and beside it the demo index feeder (a random walk of each margined
# instrument's index price, posted to the admin API every second; stopped with the server).
# INDEX_FEEDER_ARGS adds feeder options, e.g. a crash: make run INDEX_FEEDER_ARGS="--shock BTC-PERP:-8%@120"
INDEX_FEEDER_ARGS ?=
run: install
	bash ops/local-services.sh fixexchange
	$(VENV)/bin/fixserver migrate --config ops/fixserver.cfg --seed
	FIXSERVER_ADMIN_TOKEN=$${FIXSERVER_ADMIN_TOKEN:-demo-admin-token-change-me} \
		$(PY) -m fixserver.index_feeder --config ops/fixserver.cfg $(INDEX_FEEDER_ARGS) & feeder=$$!; \
	trap 'kill $$feeder 2>/dev/null' EXIT INT TERM; \
	$(VENV)/bin/fixserver serve --config ops/fixserver.cfg

test: install
	bash ops/local-services.sh fixexchange_test
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check fixserver engine feeds tests bench
	$(VENV)/bin/mypy fixserver engine feeds

bench: install
	bash ops/local-services.sh fixexchange_test
	$(PY) bench/bench_codec.py
	$(PY) bench/bench_engine.py
	$(PY) bench/bench_journal.py
	$(PY) bench/bench_pg_writer.py
	$(PY) bench/bench_e2e.py
	$(PY) bench/bench_ws.py

clean:
	rm -rf $(VENV) build *.egg-info var
