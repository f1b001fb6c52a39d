# synthweb front door. `make generate` and `make test` work on a fresh clone: the first target that
# needs the environment creates .venv, installs the CPU build of torch first (so nothing pulls a
# multi-GB CUDA build by accident), then the project with its dev extra.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
TORCH  ?= torch==2.13.0
CONFIG ?= configs/default.yaml
ARGS   ?=
STAMP  := $(VENV)/.synthweb-installed

.PHONY: help install generate filter test bench clean distclean

help:
	@echo "make generate  - the main job on $(CONFIG) (writes under output/)"
	@echo "make filter    - heuristic quality filtering: kept shards + removed/ with reasons"
	@echo "make test      - the test suite (real data from ../shared/data when present)"
	@echo "make bench     - throughput and peak memory benchmarks (prints ratios)"
	@echo "make install   - create $(VENV) and install synthweb into it"
	@echo "make clean     - remove outputs and caches (keeps $(VENV)); make distclean also removes $(VENV)"

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP)

generate: $(STAMP)
	$(BIN)/synthweb seeds --config $(CONFIG) --output output/generate $(ARGS)

filter: $(STAMP)
	$(BIN)/synthweb seeds --config $(CONFIG) --output output/filter $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest -q $(ARGS)

bench: $(STAMP)
	$(BIN)/python bench/bench_seeds.py $(ARGS)

clean:
	rm -rf output bench/out .pytest_cache build dist *.egg-info
	find . -name __pycache__ -type d -not -path "./$(VENV)/*" -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
