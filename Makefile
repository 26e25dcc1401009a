# Saliency Maps course. Students: `make lab`. Everyone: `make test`.
# Everything lives in .venv (Python 3.11, 3.12 or 3.13); nothing is registered globally.
# setup/lab/test/lock run tools/bootstrap.py, the same script Windows runs without make
# (`py tools\bootstrap.py lab`), so there is one implementation.

# PYTHON: as given (make PYTHON=python3.12, or in the environment), else the first of
# python3.11, python3.12, python3.13 that runs here.
ifeq ($(origin PYTHON),undefined)
PYTHON := $(firstword $(foreach p,python3.11 python3.12 python3.13,\
            $(shell $(p) -c "import venv" >/dev/null 2>&1 && echo $(p))))
endif
NEED_PYTHON := The course needs Python 3.11, 3.12 or 3.13: install one (python.org, or your \
  package manager: brew install python@3.12, sudo apt install python3.12-venv), or name it: \
  make PYTHON=/path/to/python3.12
BOOTSTRAP = $(if $(strip $(PYTHON)),$(PYTHON) tools/bootstrap.py,\
              echo "$(NEED_PYTHON)" >&2; exit 2; :)
VENV   := .venv
BIN    := $(VENV)/bin
# Tests run one torch thread per process (see tools/bootstrap.py: test).
TEST_ENV := OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1}
export PYTHONHASHSEED := 0
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: setup lab test lock check-platforms test-fast test-notebooks test-browser html \
        release collect grade report similarity feedback handout bench weights clean bubblewrap

# Installs only when requirements.lock, pyproject.toml or the Python version changed
# (a content hash in .venv/.installed, written once everything is installed).
setup:
	@$(BOOTSTRAP) setup

# JupyterLab on notebooks/ (exercises/ is one folder up), .venv/bin first on the PATH of
# the server, so `course check ...` works in its terminal; --allow-root only as root.
lab:
	@$(BOOTSTRAP) lab

# pytest over tests/, then nbval over notebooks/ and solutions/. The grading scenarios
# run in the bubblewrap sandbox: installed first where it is missing (root, apt).
test: bubblewrap
	@$(BOOTSTRAP) test

# bubblewrap, the grader's sandbox: apt-get install as root where missing; otherwise
# say how (grading refuses without it, the grading scenarios are skipped).
bubblewrap:
	@command -v bwrap >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		{ echo "installing bubblewrap (the grading sandbox): apt-get install -y bubblewrap"; \
		  DEBIAN_FRONTEND=noninteractive apt-get install -y -q bubblewrap >/dev/null || \
		  { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q bubblewrap >/dev/null; }; }; } || \
		echo "bubblewrap is not installed: grading tests will be skipped (sudo apt-get install bubblewrap)"

# Re-solve requirements.lock for every platform from pyproject.toml (needs the index).
lock:
	@$(BOOTSTRAP) lock

# Ask the index, without installing, whether every pin has a wheel for macOS arm64,
# Windows amd64, Linux x86_64 and aarch64 x Python 3.11-3.13. Needs the network.
check-platforms: setup
	$(BIN)/python tools/check_platforms.py

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

# make collect SET=ps1_gradients ZIP=submissions.zip [ROSTER=roster.csv] [FORCE=1]:
# an LMS download (Canvas, Moodle) into submitted/<student>/<set>/
collect: setup
	@test -n "$(SET)" -a -n "$(ZIP)" || { echo "usage: make collect SET=<problem set> ZIP=<lms zip> [ROSTER=csv] [FORCE=1]"; exit 2; }
	$(BIN)/course collect $(SET) "$(ZIP)" $(if $(ROSTER),--roster "$(ROSTER)") $(if $(FORCE),--force)

# make grade SET=ps1_gradients [SUBMISSIONS=path/to/student/folders]
# Student code runs in a bubblewrap sandbox: installed here when missing (as root).
grade: setup bubblewrap
	@test -n "$(SET)" || { echo "usage: make grade SET=<problem set> [SUBMISSIONS=dir]"; exit 2; }
	$(BIN)/course grade $(SET) $(SUBMISSIONS)

# make report SET=ps1_gradients [OUT=dir]: the class at a glance (report-SET/report.html)
report: setup
	@test -n "$(SET)" || { echo "usage: make report SET=<problem set> [OUT=dir]"; exit 2; }
	$(BIN)/course report $(SET) $(if $(OUT),--out "$(OUT)")

# make feedback SET=ps1_gradients [OUT=dir]: each student's pages (feedback/<student>/SET/)
feedback: setup
	@test -n "$(SET)" || { echo "usage: make feedback SET=<problem set> [OUT=dir]"; exit 2; }
	$(BIN)/course feedback $(SET) $(if $(OUT),--out "$(OUT)")

# make handout DIR=../student-repo [WITHHOLD=1 [AFTER=ps1_gradients]]: the repository
# students get (everything by default; WITHHOLD=1 keeps open sets' references back)
handout: setup
	@test -n "$(DIR)" || { echo "usage: make handout DIR=<new folder> [WITHHOLD=1 [AFTER=set …]]"; exit 2; }
	$(BIN)/course handout $(DIR) $(if $(WITHHOLD),--withhold) $(foreach s,$(AFTER),--after-deadline $(s))

# make similarity SET=ps1_gradients [SUBMISSIONS=dir]: answers that look copied
similarity: setup
	@test -n "$(SET)" || { echo "usage: make similarity SET=<problem set> [SUBMISSIONS=dir]"; exit 2; }
	$(BIN)/course similarity $(SET) $(SUBMISSIONS)

weights: setup
	$(BIN)/course train small_cnn
	$(BIN)/course train resnet_small

bench: setup
	@for f in bench/bench_*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

clean:
	rm -rf build .pytest_cache
