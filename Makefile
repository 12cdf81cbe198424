# The two commands of the README. Both set everything up first (scripts/setup.sh).
#   make quickstart   run suites/quickstart.yaml and write its report
#   make test         run the linter and the tests
# PYTHON=/path/to/python uses that interpreter's environment instead of ./.venv.

PY := $(if $(PYTHON),$(PYTHON),.venv/bin/python)

.PHONY: quickstart test setup setup-dev

quickstart: setup
	@test -f suites/quickstart.yaml || { echo "make quickstart: suites/quickstart.yaml is not in this version yet; set-up finished, nothing was run." >&2; exit 1; }
	$(PY) -m harness.cli run suites/quickstart.yaml

test: setup-dev
	$(PY) -m ruff check .
	$(PY) -m pytest

setup:
	scripts/setup.sh

setup-dev:
	scripts/setup.sh --dev
