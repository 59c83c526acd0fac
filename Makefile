# The two commands of the README: `make book` and `make test`.
# Each creates the virtual environment in .venv from requirements.txt if it is missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Tests and CI read the prepared datasets from ../shared/data unless told otherwise.
L2O_DATA_DIR ?= $(abspath ../shared/data)
export L2O_DATA_DIR
# Float results depend on the thread count: pin it before Python starts.
export OMP_NUM_THREADS ?= 1
export MKL_NUM_THREADS ?= 1

.PHONY: venv test test-fast book chapters smoke clean

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

## Run the whole test suite: unit tests, every chapter at smoke scale (papermill + nbval), the book build.
test: venv
	$(PY) -m pytest

## Unit tests only (no notebooks, no book build).
test-fast: venv
	$(PY) -m pytest -m "not notebooks and not book"

## Build the book from the committed notebooks (no compute), warnings as errors.
book: venv
	$(PY) -m l2o.book build

## Re-run chapters with papermill: make chapters SCALE=paper [CHAPTERS="01 02"]
## Smoke runs are also rendered as a book in _build/smoke/html; ARGS="-p kl_step 1.0"
## changes a parameter of a smoke run (the chapters' "things to try").
SCALE ?= smoke
CHAPTERS ?=
ARGS ?=
chapters: venv
	$(PY) -m l2o.book run --scale $(SCALE) $(CHAPTERS) $(ARGS)

clean:
	rm -rf _build .pytest_cache
