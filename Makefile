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

COLAB_JOBS ?= 2
COLAB_NOTEBOOKS ?= all

.PHONY: book test venv execute html sync bench clean help browser-check colab-check

help:
	@echo "make book   - create .venv if missing, execute every notebook (PROFILE=$(PROFILE)), build _build/html"
	@echo "make test   - create .venv if missing, run the whole test suite"
	@echo "make sync   - write the setup cells into notebooks/*.md, then the Colab copies notebooks/*.ipynb"
	@echo "              (run 'make execute' first: the copies take the glued numbers from _build/executed)"
	@echo "make bench  - run every benchmark (writes results/bench_*.json)"
	@echo "make browser-check - open every page of _build/html in headless Chromium; screenshots in _build/screenshots"
	@echo "make colab-check   - run every notebooks/*.ipynb under nbval in a simulated Colab (COLAB_NOTEBOOKS=..., COLAB_JOBS=2)"

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

# after `make book`: needs Debian's chromium (apt-get install -y chromium)
browser-check: venv
	$(PY) tools/browser_check.py --html _build/html --out _build/screenshots

# a fresh venv with only Colab's packages (tools/colab-preinstalled.txt); each chapter's .ipynb in an empty
# folder under `pytest --nbval-lax`, its setup cell cloning this checkout (MEDVLP_INSTALL) and pip-installing it
colab-check: venv
	$(PY) tools/colab_check.py --jobs $(COLAB_JOBS) --notebooks $(COLAB_NOTEBOOKS)

bench: venv
	$(PY) -m benchmarks.bench_render
	$(PY) -m benchmarks.bench_rfbe
	$(PY) -m benchmarks.bench_knn
	$(PY) -m benchmarks.bench_adaptor
	$(PY) -m benchmarks.bench_vlcd
	$(PY) -m benchmarks.bench_compose

clean:
	rm -rf _build
