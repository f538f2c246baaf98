# Two entry points for a fresh machine: `make demo` and `make test` (see README).
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEMO_ARGS ?= --num-sims 8 --grid-size 256

.PHONY: demo test lint typecheck unit integration system-deps bench clean readme-figures

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	# torch first, pinned: its CPU wheel; an unpinned resolve would pull a CUDA build.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

# redis-server is a system package; installed when we may (root), else its tests skip
# with that reason.
system-deps:
	@if ! command -v redis-server >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; \
	  else echo "note: redis-server not installed (apt-get install redis-server); Redis tests will be skipped"; fi; \
	fi

demo: $(STAMP) system-deps
	$(VENV)/bin/simferry compare $(DEMO_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check simferry tests bench
	$(VENV)/bin/ruff format --check simferry tests bench

typecheck: $(STAMP)
	$(VENV)/bin/mypy simferry

unit: $(STAMP)
	$(PY) -m pytest -m "not integration" -q

integration: $(STAMP) system-deps
	$(PY) -m pytest -m integration -q

test: $(STAMP) system-deps lint typecheck
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) bench/transports.py
	$(PY) bench/end_to_end.py

# The README's example table and plot (docs/): a real sweep on this machine, ~3 min.
README_SWEEP ?= --num-sims 4,8 --grid-size 64,128 --transports filesystem,shm,futures \
	--step-seconds 0 --repeat 3
readme-figures: $(STAMP)
	$(PY) docs/make_figures.py $(README_SWEEP)

clean:
	rm -rf $(VENV) runs reports .pytest_cache .mypy_cache .ruff_cache
