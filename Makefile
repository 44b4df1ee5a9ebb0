# Two commands a person needs: `make demo` (set up and run the main job) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup demo test
setup: $(VENV)/.installed
	$(VENV)/bin/shopguide broker fetch

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

demo: setup
	$(VENV)/bin/shopguide demo

test: setup
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)
