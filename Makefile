# dlbench — the commands a user needs. Everything runs from the host virtualenv (.venv).
PYTHON     ?= python3
VENV       ?= .venv
DLBENCH    := $(VENV)/bin/dlbench
BACKEND    ?= auto
SUITE      ?= suites/quick.yaml
GPU_SUITE  ?= suites/quick-gpu.yaml
PYTEST_ARGS ?=

.PHONY: setup bench bench-all check bench-gpu images base-image locks data lint test clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $@

data: setup ## Fashion-MNIST into the host cache (no-op when present, e.g. Debian's package)
	$(DLBENCH) data fetch fashion-mnist

bench: setup data ## CPU quick suite: PyTorch vs TensorFlow Keras, report under results/
	$(DLBENCH) run $(SUITE) --backend $(BACKEND)

bench-all: setup data ## every framework/API, each in its own image (suites/all-frameworks.yaml)
	$(DLBENCH) run suites/all-frameworks.yaml --backend $(BACKEND)

check: setup data ## equivalence check: every framework/API builds the same model
	$(DLBENCH) check --backend $(BACKEND)

bench-gpu: setup data ## the same suite on the GPU
	$(DLBENCH) run $(GPU_SUITE) --backend $(BACKEND)

images: setup ## build (or reuse) every CPU framework image
	$(DLBENCH) images build

base-image: setup ## air-gapped hosts: a local Debian Python base image (needs mmdebstrap)
	$(DLBENCH) images base

locks: setup ## regenerate the hash-locked requirement files in docker/
	$(VENV)/bin/python docker/lock.py

lint: setup ## ruff, mypy and the import contracts (pyproject.toml); part of `make test`
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

# Two processes while the unit tests run: every CPU image builds beside them, and the
# integration tests then reuse the images. A build that fails here fails again, with its
# message, in the integration test that needs it (no engine: those tests say so).
IMAGES_LOG ?= $(or $(TMPDIR),/tmp)/dlbench-test-images.log
test: lint
	@$(VENV)/bin/pytest tests/unit $(PYTEST_ARGS) & unit=$$!; \
	  if $(DLBENCH) images build > $(IMAGES_LOG) 2>&1; then echo "test: images ready ($(IMAGES_LOG))"; \
	  else echo "test: image build failed, the integration tests will say why:"; tail -n 3 $(IMAGES_LOG); fi; \
	  wait $$unit
	$(VENV)/bin/pytest tests/integration $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
