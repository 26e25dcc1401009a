# Saliency Maps course. Students: `make lab`. Everyone: `make test`.
# Everything lives in .venv (Python 3.11); nothing is registered globally.

PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Keep torch and numpy's BLAS from fighting over the two cores.
export OMP_NUM_THREADS ?= 2
export PYTHONHASHSEED := 0
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: setup lab test test-fast test-notebooks test-browser html release grade bench weights clean

setup: $(STAMP)

# Re-installs only when the lock or pyproject changes.
$(STAMP): requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	@touch $(STAMP)
	@echo "environment ready in $(VENV)"

# --allow-root only where it is needed (containers, CI machines running as root).
lab: setup
	$(BIN)/jupyter lab --notebook-dir=notebooks $$( [ "$$(id -u)" = 0 ] && echo --allow-root )

test: setup
	$(BIN)/python -m pytest -q tests
	$(BIN)/python -m pytest -q -p no:cacheprovider --nbval-lax notebooks solutions

test-fast: setup
	$(BIN)/python -m pytest -q tests -m "not slow"

test-notebooks: setup
	$(BIN)/python -m pytest -q --nbval-lax --durations=0 notebooks solutions

html: setup
	mkdir -p build/html
	$(BIN)/jupyter nbconvert --execute --to html --output-dir build/html notebooks/*.ipynb

weights: setup
	$(BIN)/course train small_cnn
	$(BIN)/course train resnet_small

bench: setup
	@for f in bench/bench_*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

clean:
	rm -rf build .pytest_cache
