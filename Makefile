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

test: setup vllm-env
	$(PY) -m pytest

# everything but the slow end-to-end tests (for a quick local loop)
test-fast: setup
	$(PY) -m pytest -m "not slow"

clean:
	rm -rf $(VENV) .venv-vllm .cache
