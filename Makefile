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
# The demo's timings mean something only with a known thread count: torch's default (every core) contends with
# whatever else runs on the machine; one thread per process is steady (`make demo DEMO_THREADS=8` on an idle 8-core machine).
DEMO_THREADS ?= 1
DEMO_ENV := OMP_NUM_THREADS=$(DEMO_THREADS) MKL_NUM_THREADS=$(DEMO_THREADS)

.PHONY: setup demo test clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check "$(TORCH)"
	$(BIN)/python -m pip install -q --disable-pip-version-check -e ".[test,bench]"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(DEMO_ENV) $(BIN)/cachepilot generate --classes 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 \
		--steps 50 --seed 0 --out $(OUT)/grid.png
	$(DEMO_ENV) $(BIN)/cachepilot evaluate --samples-per-class 50 --steps 50 --json $(OUT)/evaluate.json
	$(DEMO_ENV) $(BIN)/cachepilot generate --classes 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 \
		--steps 50 --seed 0 --policy learned --speed 0.3 --out $(OUT)/grid_cached.png
	$(DEMO_ENV) $(BIN)/cachepilot generate --pipeline checkpoints/scenes-flux --prompts bench/prompts/scenes_demo.txt \
		--steps 20 --seed 0 --cache checkpoints/scenes-flux-cache --policy learned:0.4 --out $(OUT)/scenes_cached.png

test: $(STAMP)
	$(BIN)/pytest -q

clean:
	rm -rf $(VENV) $(OUT) build *.egg-info
