# Two entry points: `make check` (the main job) and `make test` (the whole suite).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: check test lint bench z3 proofs z3-agree docs clean venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,cluster]'
	touch $(STAMP)

check: $(STAMP)
	$(BIN)/crmodel check --config default --traces traces

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/pytest -n 2 --dist loadgroup

docs: $(STAMP)
	$(BIN)/python -m crmodel.docs

bench: $(STAMP)
	$(BIN)/python benchmarks/bench.py

# The z3 engine on the design's fix (proofs at 4 tasks, 8 fds, 8 files) and on its mutants
# (a proof attempt at a small size, then BMC on tiny for the trace: what refutes a mutant).
z3: $(STAMP)
	$(BIN)/crmodel check --engine z3 --config tiny --traces traces-z3 --variant fixed
	$(BIN)/crmodel check --engine z3 --config tiny --traces traces-z3 --proof-size 2,1,2,2 \
	  $(foreach m,$(shell $(BIN)/crmodel variants --json | $(BIN)/python -c \
	  "import json,sys; print(' '.join(v['name'] for v in json.load(sys.stdin) if v['kind'] == 'mutant'))"),--variant $(m))

# Every proof obligation of every encoded spec at the default proof size, one pytest item each.
proofs: $(STAMP)
	CRMODEL_Z3_FULL=1 $(BIN)/pytest tests/test_z3_proofs.py -k obligation

# Both engines on tiny for every (variant, encoded spec): same verdicts, same trace lengths.
z3-agree: $(STAMP)
	CRMODEL_Z3_SLOW=1 $(BIN)/pytest tests/test_z3_agreement.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
