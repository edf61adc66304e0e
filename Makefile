# Two entry points, each doing all set-up itself on a fresh machine:
#   make demo  - sample digits with the embedded checkpoint, write a grid, print timings and quality;
#                then held-out prompts on the embedded text-to-image pipeline, full compute vs. cached
#   make test  - run the test suite
# torch is pinned and installed first: the pinned CPU build comes from local disk in seconds,
# while an unpinned torch pulled in by a dependency would download a multi-GB CUDA build.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.cachepilot-installed
TORCH ?= torch==2.13.0
OUT ?= out

.PHONY: setup demo test clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check "$(TORCH)"
	$(BIN)/python -m pip install -q --disable-pip-version-check -e ".[test]"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/cachepilot generate --classes 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 \
		--steps 50 --seed 0 --out $(OUT)/grid.png
	$(BIN)/cachepilot evaluate --samples-per-class 50 --steps 50 --json $(OUT)/evaluate.json
	$(BIN)/cachepilot generate --classes 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 \
		--steps 50 --seed 0 --policy learned --speed 0.3 --out $(OUT)/grid_cached.png
	$(BIN)/cachepilot generate --pipeline checkpoints/scenes-flux --prompts bench/prompts/scenes_demo.txt \
		--steps 20 --seed 0 --cache checkpoints/scenes-flux-cache --policy learned:0.4 --out $(OUT)/scenes_cached.png

test: $(STAMP)
	$(BIN)/pytest -q

clean:
	rm -rf $(VENV) $(OUT) build *.egg-info
