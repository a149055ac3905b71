# tsubame — two commands: `make repro` runs the default pipeline, `make test` runs the test suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# dvc.yaml's commands say `python`: the venv's, for `make repro` and for the tests that run dvc
export PATH := $(abspath $(BIN)):$(PATH)
# llama-cpp-python is built from source by pip (the wheel is cached after the first build): only the
# library, without the multimodal part, tests, tools and examples; both cores
export CMAKE_ARGS ?= -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF
export CMAKE_BUILD_PARALLEL_LEVEL ?= 2

.PHONY: install repro test bench clean

# Re-install only when the project's dependencies change.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev,tvm]'
	touch $(STAMP)

install: $(STAMP)

repro: install
	test -d .dvc || $(BIN)/dvc init --quiet
	$(BIN)/dvc repro

test: install
	$(BIN)/python -m pytest

# The benchmarks, ~30 min on 2 cores: benchmarks/results/*.json and the README's tables (see its Performance).
bench: install   # dev includes the bench extra (TRL, matplotlib)
	$(BIN)/python benchmarks/chunked_loss.py
	$(BIN)/python benchmarks/distill_step.py
	$(BIN)/python benchmarks/pipeline.py
	$(BIN)/python benchmarks/study.py --short

clean:
	rm -rf $(VENV) checkpoints
