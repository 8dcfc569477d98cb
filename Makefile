# Two commands do all set-up on a fresh machine:
#   make demo   -> builds the venv, then runs jobs/tournament.py on the built-in demo world
#   make test   -> builds the venv (and the vLLM judge venv), then runs the whole test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python

# torch/torchvision are installed first as an exact pair, so no resolver ever picks another torch
# (2.14.1 / 0.29.1 lie on this machine's disk; open_clip needs the matching torchvision).
TORCH_PAIR ?= torch==2.14.1 torchvision==0.29.1

.PHONY: setup demo test test-fast vllm-env clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q $(TORCH_PAIR)
	$(PY) -m pip install --disable-pip-version-check -q -e '.[dev]'
	touch $@

vllm-env: setup
	bash scripts/make_vllm_env.sh

demo: setup
	$(PY) jobs/tournament.py

# Two pytest workers (pytest-xdist), one test file each at a time: many tests wait on process, Ray and
# vLLM start-ups as much as they compute, so two overlap (22.7-27.0 min on the last CI runs; serial runs took ~36 on 2 idle
# cores, before later cuts: docs/testing.md). A file's tests stay together, so module fixtures are built once. Handing out
# the longest files first was measured and was slower (30.4 vs 28.4 min): it runs the CPU-heavy
# distillation files side by side. PYTEST_WORKERS=0 runs serially.
PYTEST_WORKERS ?= 2
XDIST := $(if $(filter 0,$(PYTEST_WORKERS)),,-n $(PYTEST_WORKERS) --dist loadfile)

test: setup vllm-env
	$(PY) -m pytest $(XDIST)

# everything but the slow end-to-end tests (for a quick local loop)
test-fast: setup
	$(PY) -m pytest -m "not slow" $(XDIST)

clean:
	rm -rf $(VENV) .venv-vllm .cache
