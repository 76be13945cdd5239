# medvlp: the two set-up commands are `make book` and `make test` (see README).
# Everything else here is a small step behind them.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PROFILE ?= fast
NOTEBOOKS ?= all
JOBS ?= 2

# Offline by design: nothing downloads weights or data at run time.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export MPLBACKEND := Agg
export PYTHONHASHSEED := 0
export TOKENIZERS_PARALLELISM := false

.PHONY: book test venv execute html sync bench clean help

help:
	@echo "make book   - create .venv if missing, execute every notebook (PROFILE=$(PROFILE)), build _build/html"
	@echo "make test   - create .venv if missing, run the whole test suite"
	@echo "make sync   - regenerate notebooks/*.ipynb from the jupytext sources notebooks/*.md"
	@echo "make bench  - run every benchmark (writes results/bench_*.json)"

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

book: venv execute html

execute: venv
	$(PY) -m medvlp_lib.notebooks execute --profile $(PROFILE) --notebooks $(NOTEBOOKS) --jobs $(JOBS)

html: venv
	$(PY) -m medvlp_lib.notebooks build-html
	@test -f _build/html/index.html || { echo "ERROR: _build/html/index.html was not produced"; exit 1; }
	@echo "Book built: _build/html/index.html"

test: venv
	$(PY) -m pytest -q

sync: venv
	$(PY) -m medvlp_lib.notebooks sync

bench: venv
	$(PY) -m benchmarks.bench_render
	$(PY) -m benchmarks.bench_rfbe
	$(PY) -m benchmarks.bench_knn
	$(PY) -m benchmarks.bench_adaptor
	$(PY) -m benchmarks.bench_vlcd

clean:
	rm -rf _build
