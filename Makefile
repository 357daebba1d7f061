# hwlab: `make run` (dashboard over the embedded default store), `make test`, `make bench`.
# Each target sets up .venv itself when it is missing, and re-installs only when pyproject.toml or
# constraints.txt change (the stamp file below records the last install).
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
PORT    ?= 8501

.PHONY: run test bench lint clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt torch==2.13.0
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/hwlab dashboard --port $(PORT)

test: $(STAMP)
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest -n 2 --dist loadgroup -q

bench: $(STAMP)
	mkdir -p benchmarks/results
	set -e; for f in benchmarks/*.py; do echo "== $$f"; $(BIN)/python $$f; done

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .hwlab-test-home benchmarks/results
