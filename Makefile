# The commands of the README. Each sets everything up first (scripts/setup.sh).
#   make quickstart   run suites/quickstart.yaml and write its report
#   make test         run the linter and the tests
#   make setup        set up ./.venv only (scripts/setup.sh); runs nothing
#   make setup-dev    the same with the test tools (pytest, ruff: the conformance kit needs them)
#   make mutation     mutation testing of the numeric core (docs/mutation.md; not part of `make test`)
# PYTHON=/path/to/python uses that interpreter's environment instead of ./.venv.

PY := $(if $(PYTHON),$(PYTHON),.venv/bin/python)

.PHONY: quickstart test mutation setup setup-dev

quickstart: setup
	@test -f suites/quickstart.yaml || { echo "make quickstart: suites/quickstart.yaml is not in this version yet; set-up finished, nothing was run." >&2; exit 1; }
	$(PY) -m harness.cli run suites/quickstart.yaml

test: setup-dev
	$(PY) -m ruff check .
	$(PY) -m pytest -n auto --maxprocesses 4 --dist loadgroup

# MUTATION_JOBS=N runs N mutants at a time (default: one per CPU). A plain run starts from a
# fresh mutants/ and tests every mutant of the numeric core; MUTANTS='NAME ...' (names or globs,
# e.g. 'harness.rl.x_gae__mutmut_*') re-tests only those, keeping the other results there.
MUTMUT := $(PY) -c 'import sys; from mutmut.__main__ import cli; sys.exit(cli())'

mutation: setup-dev
	@$(PY) -c 'import mutmut' 2>/dev/null || $(PY) -m pip install -q -e '.[mutation]'
	$(if $(MUTANTS),,rm -rf mutants)
	set -f; $(MUTMUT) run $(if $(MUTATION_JOBS),--max-children $(MUTATION_JOBS)) \
		$(if $(MUTANTS),$(MUTANTS),$$($(PY) scripts/mutation_report.py --patterns))
	$(PY) scripts/mutation_report.py

setup:
	scripts/setup.sh

setup-dev:
	scripts/setup.sh --dev
