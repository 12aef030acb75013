# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test install bench clean

$(STAMP): pyproject.toml runtime/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e "./runtime[onnx]"
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/edgeml build --target rpi4 --out dist/demo --time-budget 20
	$(BIN)/edgeml demo-data --rows 5 --seed 7 --output dist/demo-rows.csv --no-label
	$(BIN)/edgeml-runtime score dist/demo --input dist/demo-rows.csv --output -

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python bench/bench_runtime.py

clean:
	rm -rf $(VENV) dist bench/out
