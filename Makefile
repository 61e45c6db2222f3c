# Two entry points for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_HOME := ecg-intake-data
DEMO_INBOX := demo-inbox
UNTRAINED := $(DEMO_HOME)/models/untrained
PIP_LOG := $(VENV)/pip.log
# pip's own output (setuptools' editable-install notice among it) goes to the log; a failed install prints it.
PIP_QUIET = >>$(PIP_LOG) 2>&1 || { cat $(PIP_LOG); exit 1; }

.PHONY: deps demo test test-slow lint bench clean

# System packages: installed with apt-get (as root, or through sudo), or a stop that prints the command.
deps:
	@bash deploy/system-deps.sh $(if $(filter test test-slow,$(MAKECMDGOALS)),test,demo)

$(STAMP): pyproject.toml
	@echo "setting up $(VENV) (pip's output: $(PIP_LOG))"
	@$(PYTHON) -m venv $(VENV) && : >$(PIP_LOG)
	@$(BIN)/pip install --quiet --upgrade pip $(PIP_QUIET)
	@$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1 $(PIP_QUIET)
	@$(BIN)/pip install --quiet -e '.[dev,onnx]' $(PIP_QUIET)
	@touch $(STAMP)

# Sets up, writes sample ECGs into an inbox, processes them on the embedded default, prints the results.
demo: deps $(STAMP)
	@if [ ! -f models/default/manifest.json ] && [ -z "$$ECG_INTAKE_BUNDLE" ] && [ ! -f $(UNTRAINED)/manifest.json ]; then \
		$(BIN)/ecg-intake model init-untrained $(UNTRAINED); fi
	@$(BIN)/ecg-intake samples $(DEMO_INBOX)
	@if [ -f models/default/manifest.json ] || [ -n "$$ECG_INTAKE_BUNDLE" ]; then \
		$(BIN)/ecg-intake run --inbox $(DEMO_INBOX) --once; \
	else ECG_INTAKE_BUNDLE=$(UNTRAINED) $(BIN)/ecg-intake run --inbox $(DEMO_INBOX) --once; fi
	@$(BIN)/ecg-intake results

# The default test suite; slow tests (training, retraining, long fault runs) are excluded.
test: deps $(STAMP)
	$(BIN)/pytest $(PYTEST_ARGS)

# Only the slow tests; CI runs them after `make test`.
test-slow: deps $(STAMP)
	$(BIN)/pytest -m slow $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(DEMO_HOME) $(DEMO_INBOX) .pytest_cache
