# `make demo`, `make test` and `make bench` each create .venv if missing and install what they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test bench lint docs clean-demo labelstudio

$(STAMP): pyproject.toml setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch from pip with these pins: they install from local files where available (see README)
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[all,dev]'
	touch $(STAMP)

# the compiled parts (build mmir's rows, TSV segments): rebuilt in place when their source changes
EXT_SRC := $(wildcard wit_retrieval/build/_fastbuild*.c wit_retrieval/build/_fastbuild*.h wit_retrieval/io/_fast*.c) setup.py
EXT_STAMP := $(VENV)/.fastbuild
$(EXT_STAMP): $(STAMP) $(EXT_SRC)
	$(PY) setup.py -q build_ext --inplace
	touch $(EXT_STAMP)

demo: $(EXT_STAMP)
	$(PY) -m wit_retrieval.demo --out demo_out

# Label Studio (tests of the annotation round trip) in its own venv: it pins packages that clash with ours.
# The stamp also holds a migrated Label Studio database with two test raters (a few minutes, once).
LS_VENV := .venv-labelstudio
LS_VERSION := 1.23.2
LS_STAMP := $(LS_VENV)/.installed-$(LS_VERSION)
$(LS_STAMP):
	test -x $(LS_VENV)/bin/python || $(PYTHON) -m venv $(LS_VENV)
	$(LS_VENV)/bin/python -m pip install -q --upgrade pip
	$(LS_VENV)/bin/python -m pip install -q label-studio==$(LS_VERSION)
	$(PYTHON) tests/labelstudio_server.py --template
	touch $(LS_STAMP)

labelstudio: $(LS_STAMP)

test: $(EXT_STAMP) $(LS_STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile --durations=30

lint: $(STAMP)
	$(VENV)/bin/ruff check .

docs: $(STAMP)
	$(VENV)/bin/wit-retrieval docs cli --out docs/cli.md
	$(VENV)/bin/wit-retrieval docs formats --path docs/formats.md

bench: $(EXT_STAMP)
	bash benchmarks/run.sh
