# Two entry points for a fresh machine: `make demo` and `make test` (see README).
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEMO_ARGS ?= --num-sims 8 --grid-size 256

.PHONY: demo test lint typecheck docs unit integration cluster cluster-up cluster-down system-deps bench clean readme-figures

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	# torch first, pinned: its CPU wheel; an unpinned resolve would pull a CUDA build.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

# redis-server, and Slurm + munge for the emulated cluster, are system packages;
# installed when we may (root), else their tests skip with that reason.
SYSTEM_PACKAGES := redis-server slurmctld slurmd slurm-client munge iproute2
system-deps:
	@if ! command -v redis-server >/dev/null 2>&1 || ! command -v slurmd >/dev/null 2>&1 \
	    || ! command -v munged >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SYSTEM_PACKAGES) >/dev/null; \
	  else echo "note: $(SYSTEM_PACKAGES) not all installed; Redis and cluster tests will be skipped"; fi; \
	fi

demo: $(STAMP) system-deps
	$(VENV)/bin/simferry compare $(DEMO_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check simferry tests bench scripts
	$(VENV)/bin/ruff format --check simferry tests bench scripts

typecheck: $(STAMP)
	$(VENV)/bin/mypy simferry

# The docs site (mkdocs.yml): any warning -- a broken link, a page missing from the nav, an
# API docstring that does not render -- fails the build.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet --site-dir site

unit: $(STAMP)
	$(PY) -m pytest -m "not integration and not cluster" -q

integration: $(STAMP) system-deps
	$(PY) -m pytest -m "integration and not cluster" -q

# The emulated Slurm cluster (tests/cluster/emulated.py): root, Debian's slurmctld, slurmd,
# slurm-client and munge. The cluster tests bring up their own; these are for people.
CLUSTER_NODES ?= 2
CLUSTER_DIR   ?= /tmp/simferry-cluster
cluster: $(STAMP)
	$(PY) -m pytest -m cluster -q

cluster-up: $(STAMP)
	$(PY) -m tests.cluster.emulated up --nodes $(CLUSTER_NODES) --dir $(CLUSTER_DIR)

cluster-down: $(STAMP)
	$(PY) -m tests.cluster.emulated down --dir $(CLUSTER_DIR)

test: $(STAMP) system-deps lint typecheck docs
	$(PY) -m pytest -q --durations=30

bench: $(STAMP)
	$(PY) bench/transports.py
	$(PY) bench/end_to_end.py

# The docs' example table and plot (docs/benchmarks.md): a real sweep here, ~3 min.
README_SWEEP ?= --num-sims 4,8 --grid-size 64,128 --transports filesystem,shm,futures \
	--step-seconds 0 --repeat 3
readme-figures: $(STAMP)
	$(PY) docs/make_figures.py $(README_SWEEP)

clean:
	rm -rf $(VENV) runs reports site .pytest_cache .mypy_cache .ruff_cache
