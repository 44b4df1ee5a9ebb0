# Two commands a person needs: `make demo` (set up and run the main job) and `make test`
# (`make unit` for the pure tests alone, `make lint` for ruff).
# Each installs into .venv what it runs: the demo the train and local extras (torch, the local
# Triton), the tests the test extra (both of those and the test tools). `pip install .` alone is
# the core install: worker, replay, broker, Triton client (README, "Installs").
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
EXTRAS_demo := train,local
EXTRAS_test := test

# System pieces, each installed only if missing: the Triton stub's libpython (demo and tests) and
# the validators of deploy/ (tests/test_deploy.py).
TOOLS := $(or $(SHOPGUIDE_CACHE),$(HOME)/.cache/shopguide)/bin
KUBECONFORM_VERSION := v0.7.0
KUSTOMIZE_VERSION := v5.5.0

.PHONY: setup demo-setup tools test-tools demo test unit lint
setup: $(VENV)/.installed-test tools test-tools
	$(VENV)/bin/shopguide broker fetch

demo-setup: $(VENV)/.installed-demo tools
	$(VENV)/bin/shopguide broker fetch

tools:
	@ldconfig -p | grep -q libpython3.11.so.1.0 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libpython3.11; }  # Triton's Python-backend stub links it

test-tools:
	@command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }  # tests/test_live_page.py
	@command -v promtool >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus; }
	@test -x $(TOOLS)/kubeconform || GOBIN=$(TOOLS) go install github.com/yannh/kubeconform/cmd/kubeconform@$(KUBECONFORM_VERSION)
	@docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose; }
	@command -v kubectl >/dev/null || test -x $(TOOLS)/kustomize || GOBIN=$(TOOLS) go install sigs.k8s.io/kustomize/kustomize/v5@$(KUSTOMIZE_VERSION)

$(VENV)/.installed-%: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[$(EXTRAS_$*)]'
	touch $@

demo: demo-setup
	$(VENV)/bin/shopguide demo

test: setup
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

# The quick tests only (no broker, Triton or Prometheus started, no model trained past a few
# seconds): for every edit.
unit: $(VENV)/.installed-test
	$(VENV)/bin/python -m pytest -q -m "not kafka and not triton and not prometheus and not slow" $(PYTEST_ARGS)

lint: $(VENV)/.installed-test
	$(VENV)/bin/ruff check .
