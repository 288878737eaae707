# Everything runs from a virtual environment in .venv that these targets create on first use.
#   make serve [ARGS="--port 9000 ..."]                                   set up, then serve the default model
#   make transcribe [MODEL=<hub id | folder | fairseq .pt>] AUDIO="<files>"   set up, then transcribe
#   make test-fast                                                        set up, then run the fast tier (under 2 minutes)
#   make test                                                             set up, then the fast tier, lint, the layers and the rest
#   make lint                                                             ruff: lint and format check

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# A second transformers release, to prove saved folders load in transformers 4.x as well as 5.x.
TRANSFORMERS4 := $(VENV)/transformers4
TRANSFORMERS4_PACKAGES := transformers==4.57.6 huggingface_hub==0.36.0 tokenizers==0.22.1 \
	requests==2.32.5 urllib3==2.5.0 charset-normalizer==3.4.4 idna==3.10 certifi==2025.8.3

.PHONY: setup setup-serve setup-dev serve transcribe test test-fast lint digits-model digits-folds

setup: $(VENV)/.installed
setup-serve: $(VENV)/.installed-serve
setup-dev: $(VENV)/.installed-dev $(TRANSFORMERS4)/.installed

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip==26.3

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[torch]'
	touch $@

# The server's extra: no torch (kenlm builds from source: a C++ compiler, about a minute).
$(VENV)/.installed-serve: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[serve]'
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	touch $@ $(VENV)/.installed $(VENV)/.installed-serve

$(TRANSFORMERS4)/.installed: | $(BIN)/python
	$(BIN)/pip install -q --no-deps --target $(TRANSFORMERS4) $(TRANSFORMERS4_PACKAGES)
	touch $@

serve: setup-serve
	$(BIN)/python -m service $(ARGS)

transcribe: setup
	@test -n "$(AUDIO)" || { echo 'usage: make transcribe [MODEL=<model>] AUDIO="<files>"' >&2; exit 2; }
	$(BIN)/python -m model transcribe $(if $(MODEL),--model "$(MODEL)") $(AUDIO)

# The fast tier (tests marked `fast`: the app in-process, decoding, audio; no export, server process or
# training) fails in seconds what would otherwise fail after minutes, so it runs first.
test-fast: setup-dev
	$(BIN)/python -m pytest -q -m fast

lint: setup-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: test-fast lint
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -m "not fast" --durations=15

# The shipped default model, models/digits/, remade from ../shared/data by our own commands (1 h 41 min
# on 2 idle cores; needs espeak-ng, flite and Festival for the synthetic voices).
digits-model: setup-dev
	PYTHON=$(BIN)/python bash training/recipes/digits-model.sh

# Its leave-speakers-out estimate on digits-multi's 194 speakers (about 70 min on 2 cores, after digits-model).
digits-folds: setup-dev
	PYTHON=$(BIN)/python bash training/recipes/digits-multi-folds.sh
