# bottomup: `make compare` runs the main job, `make test` the tests; each sets up .venv on first use.
# torch is pinned below; where pip's configuration does not provide the CPU wheel (plain PyPI serves Linux the CUDA
# build), run `make setup TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"`. GPU users: install
# the CUDA build into .venv first (see README), e.g. `make setup TORCH="torch==2.13.0 --index-url
# https://download.pytorch.org/whl/cu128"`.

PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.bottomup-installed

.PHONY: setup test compare oracle bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: setup
	$(PY) -m pytest -q

compare: setup
	$(PY) -m bottomup.compare $(ARGS)

oracle: setup
	$(PY) -m bottomup.oracle $(ARGS)

bench: setup
	$(PY) experiments/bench_decoders.py $(ARGS)

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache
