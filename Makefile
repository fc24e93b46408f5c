# Two commands a fresh machine needs: `make run` and `make test`. Both build .venv/ when needed.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test bench demo-schedules

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt -r requirements-dev.txt
	# k-diffusion is only the reference the equivalence tests compare against; its full
	# dependency set (wandb, clip, ...) is not needed for the two modules they load.
	$(PY) -m pip install -q --no-deps k-diffusion==0.1.1.post1
	touch $@

run: $(STAMP)
	$(PY) -m sampler_lib

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) bench/bench_sampler_lib.py
