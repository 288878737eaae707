# Everything runs from a virtual environment in .venv that these targets create on first use.
#   make transcribe MODEL=<hub id | folder | fairseq .pt> AUDIO="<files>"   set up, then transcribe
#   make test                                                             set up, then check the layers and run the tests

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# A second transformers release, to prove saved folders load in transformers 4.x as well as 5.x.
TRANSFORMERS4 := $(VENV)/transformers4
TRANSFORMERS4_PACKAGES := transformers==4.57.6 huggingface_hub==0.36.0 tokenizers==0.22.1 \
	requests==2.32.5 urllib3==2.5.0 charset-normalizer==3.4.4 idna==3.10 certifi==2025.8.3

.PHONY: setup setup-dev transcribe test

setup: $(VENV)/.installed
setup-dev: $(VENV)/.installed-dev $(TRANSFORMERS4)/.installed

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip==26.3

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[torch]'
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	touch $@ $(VENV)/.installed

$(TRANSFORMERS4)/.installed: | $(BIN)/python
	$(BIN)/pip install -q --no-deps --target $(TRANSFORMERS4) $(TRANSFORMERS4_PACKAGES)
	touch $@

transcribe: setup
	@test -n "$(MODEL)" -a -n "$(AUDIO)" || { echo 'usage: make transcribe MODEL=<model> AUDIO="<files>"' >&2; exit 2; }
	$(BIN)/python -m model transcribe --model "$(MODEL)" $(AUDIO)

test: setup-dev
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q
