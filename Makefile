# Saliency Maps course. Students: `make lab`. Everyone: `make test`.
# Everything lives in .venv (Python 3.11); nothing is registered globally.

PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Tests run one torch thread per process: the suite runs kernels, graders and a
# browser side by side, and two spinning OpenMP threads per process on a 2-core
# machine made training 3.5x slower than one thread (13.3 s vs 3.7 s an epoch).
TEST_ENV := OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1}
export PYTHONHASHSEED := 0
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: setup lab test test-fast test-notebooks test-browser html release grade handout bench weights clean

setup: $(STAMP)

# Re-installs only when the lock or pyproject changes.
$(STAMP): requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	@touch $(STAMP)
	@echo "environment ready in $(VENV)"

# --allow-root only where it is needed (containers, CI machines running as root).
# Opens on notebooks/; exercises/ is one folder up in the file browser.
lab: setup
	$(BIN)/jupyter lab --notebook-dir=. --ServerApp.default_url=/lab/tree/notebooks \
	  $$( [ "$$(id -u)" = 0 ] && echo --allow-root )

test: setup
	$(TEST_ENV) $(BIN)/python -m pytest -q tests
	$(TEST_ENV) $(BIN)/python -m pytest -q -p no:cacheprovider --durations=20 --nbval-lax notebooks solutions

test-fast: setup
	$(TEST_ENV) $(BIN)/python -m pytest -q tests -m "not slow"

test-notebooks: setup
	$(TEST_ENV) $(BIN)/python -m pytest -q --nbval-lax --durations=0 notebooks solutions

# Browser tests (tests/browser): JupyterLab from this venv on 127.0.0.1 with a
# scratch copy of notebooks/, driven by Debian's Chromium through Playwright.
# Screenshots and latency.json land in artifacts/browser/.
CHROMIUM ?= /usr/bin/chromium
test-browser: setup
	@if [ ! -x "$(CHROMIUM)" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Chromium: apt-get install -y chromium"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null \
	    || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; } \
	    || exit 1; \
	  else \
	    echo "make test-browser needs Chromium at $(CHROMIUM)."; \
	    echo "  Debian/Ubuntu: sudo apt-get install -y chromium"; \
	    echo "  or: make test-browser CHROMIUM=/path/to/chromium"; \
	    exit 1; \
	  fi; \
	fi
	$(TEST_ENV) COURSE_BROWSER=1 CHROMIUM=$(CHROMIUM) $(BIN)/python -m pytest -q -p no:cacheprovider -s tests/browser

html: setup
	mkdir -p build/html
	$(BIN)/jupyter nbconvert --execute --to html --output-dir build/html notebooks/*.ipynb

# Instructors: make exercises/ from solutions/ (nbgrader), then grade a class.
release: setup
	$(BIN)/course release

# make grade SET=ps1_gradients [SUBMISSIONS=path/to/student/folders]
# Student code runs in a bubblewrap sandbox: installed here when missing (as root).
grade: setup
	@test -n "$(SET)" || { echo "usage: make grade SET=<problem set> [SUBMISSIONS=dir]"; exit 2; }
	@command -v bwrap >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		(apt-get install -y bubblewrap || (apt-get update && apt-get install -y bubblewrap)); } || true
	$(BIN)/course grade $(SET) $(SUBMISSIONS)

# make handout DIR=../student-repo [AFTER=ps1_gradients]: the repository students get
handout: setup
	@test -n "$(DIR)" || { echo "usage: make handout DIR=<new folder> [AFTER=set …]"; exit 2; }
	$(BIN)/course handout $(DIR) $(foreach s,$(AFTER),--after-deadline $(s))

weights: setup
	$(BIN)/course train small_cnn
	$(BIN)/course train resnet_small

bench: setup
	@for f in bench/bench_*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

clean:
	rm -rf build .pytest_cache
