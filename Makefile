# Two entry points for a newcomer: `make demo` and `make test`. Both install what is missing first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test install compile bench fuzz clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	# The OPA engine: its wheel claims Python>=3.14 but runs on 3.11, so pip must be told.
	$(BIN)/pip install --quiet --ignore-requires-python opa-golib-python-bindings==0.4.4
	$(BIN)/pip check
	touch $(STAMP)

# checkov scans manifests from a venv of its own; its pins clash with kfp's.
CHECKOV := .venv-checkov/bin/checkov
$(CHECKOV):
	$(PYTHON) -m venv .venv-checkov
	.venv-checkov/bin/pip install --quiet --upgrade pip
	.venv-checkov/bin/pip install --quiet 'checkov>=3.2,<4'

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/mlsec run

test: $(STAMP) $(CHECKOV)
	$(BIN)/ruff check src components pipelines tests benchmarks
	$(BIN)/mypy
	MLSEC_CHECKOV=$(CHECKOV) $(BIN)/python -m pytest -q

compile: $(STAMP)
	$(BIN)/mlsec compile -o pipeline.yaml

bench: $(STAMP)
	for b in benchmarks/bench_*.py; do $(BIN)/python $$b || exit 1; done

# schemathesis over the served OpenAPI: 3,200 cases over V1 and V2; prints the count of server errors (must be 0).
fuzz: $(STAMP)
	MLSEC_FUZZ_CASES=3200 $(BIN)/python -m pytest -q -s tests/test_serve_fuzz.py -k openapi

clean:
	rm -rf .mlsec local_outputs pipeline.yaml
