# Formpost: `make run` serves it, `make test` checks it. Both set up .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8000

.PHONY: run test bench bench-ceiling lint format clean messages translations

# Translations (README: "Translations"). `make messages` extracts the strings
# from app/ and templates/ and merges them into every catalogue; translators
# then edit app/translations/<locale>/LC_MESSAGES/messages.po. The compiled
# .mo files are committed too (a deploy from git needs no build step) and
# rebuilt by `make run` and `make test`.
POT := app/translations/messages.pot
EXTRACT := $(BIN)/pybabel extract -F babel.cfg -k _l -k lazy_gettext -c TRANSLATORS: \
	--no-location --sort-output --project=Formpost --copyright-holder=Formpost

messages: $(VENV)/.runtime
	$(EXTRACT) -o $(POT) .
	$(BIN)/pybabel update -i $(POT) -d app/translations --no-fuzzy-matching \
	  --ignore-obsolete --ignore-pot-creation-date

translations: $(VENV)/.runtime
	$(BIN)/pybabel compile -d app/translations --statistics

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
	  || { echo "Formpost needs Python 3.11 or newer (found: $$($(PYTHON) --version))"; exit 1; }
	$(PYTHON) -m venv $(VENV)

$(VENV)/.runtime: requirements.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

$(VENV)/.dev: requirements-dev.txt requirements.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $(VENV)/.runtime $@

# The Procfile is the one description of the processes: web and worker.
run: $(VENV)/.runtime translations
	PATH="$(CURDIR)/$(BIN):$$PATH" BIND="$(HOST):$(PORT)" $(BIN)/honcho start -f Procfile

test: $(VENV)/.dev translations
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest

# Needs wrk (Debian: apt-get install wrk). Writes bench/results/latest.json.
bench: $(VENV)/.dev
	$(BIN)/python bench/run.py

# The most any durable endpoint reaches here, against the bare one (bench/README.md).
bench-ceiling: $(VENV)/.dev
	$(BIN)/python bench/ceiling.py

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(VENV)/.dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis test-artifacts
