# One-command set-up on a fresh machine: `make book` (build the book) and `make test` (everything CI checks).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
BOOK_FLAGS := -W -n --keep-going
NOTEBOOKS := $(sort $(wildcard notebooks/*.ipynb))

.PHONY: setup book test notebooks runtimes execute benchmarks clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[all,book,test,bench]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

## book: build the HTML book into _build/html (notebooks are committed executed; nothing is re-run)
book: $(STAMP)
	rm -rf _build/html
	$(BIN)/jupyter-book build . $(BOOK_FLAGS)
	@echo "Book built: $(CURDIR)/_build/html/index.html"

## test: the book build, then unit tests, the docstring examples, every notebook under nbval at the quick scale and
## the built book opened in headless Chromium (tests/test_book_browser.py; it skips, saying why, without Chromium)
test: book
	FLOWLIB_SCALE=$${FLOWLIB_SCALE:-quick} MPLBACKEND=Agg $(BIN)/python -m pytest -p no:cacheprovider \
		--doctest-modules --nbval-lax --nbval-current-env tests flowlib $(NOTEBOOKS); \
	status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests: the test suite is missing" >&2; exit 1; fi; \
	exit $$status

## notebooks: put every notebook's install cell (hidden in the book) in standard form; see tools/notebooks.py
notebooks: $(STAMP)
	$(BIN)/python tools/notebooks.py $(NOTEBOOKS)

## runtimes: time every notebook at the quick scale and regenerate the runtime table of book/intro.md
runtimes: $(STAMP)
	$(BIN)/python tools/runtimes.py --measure quick

## execute: re-execute every notebook in place at the scale of FLOWLIB_SCALE (refreshes the committed outputs);
## MPLBACKEND is unset for the kernels: with MPLBACKEND=Agg they would save no figures
execute: $(STAMP)
	for notebook in $(NOTEBOOKS); do \
		echo "== $$notebook (scale: $${FLOWLIB_SCALE:-default})"; \
		env -u MPLBACKEND $(BIN)/jupyter nbconvert --to notebook --execute --inplace \
			--ExecutePreprocessor.timeout=7200 "$$notebook" \
			|| exit 1; \
	done
	$(BIN)/python tools/notebooks.py $(NOTEBOOKS)

## benchmarks: speed and size comparisons against reference implementations, ratios printed
benchmarks: $(STAMP)
	for script in benchmarks/*.py; do echo "== $$script"; $(BIN)/python "$$script" || exit 1; done

clean:
	rm -rf _build .pytest_cache
