# Two entry points for a newcomer: `make demo` and `make test`. Both install what is missing first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-slow install compile bench fuzz clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	# The OPA engine: its wheel claims Python>=3.14 but runs on 3.11, so pip must be told.
	$(BIN)/pip install --quiet --ignore-requires-python opa-golib-python-bindings==0.4.4
	$(BIN)/pip check
	touch $(STAMP)

# checkov scans manifests from a venv of its own; its pins clash with kfp's.
CHECKOV := .venv-checkov/bin/checkov
$(CHECKOV):
	$(PYTHON) -m venv .venv-checkov
	.venv-checkov/bin/pip install --quiet --upgrade pip
	.venv-checkov/bin/pip install --quiet 'checkov>=3.2,<4'

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/mlsec run

# Debian packages the tests and the container targets need, installed where missing (CI runs as root).
APT_INSTALL := DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends
$(VENV)/.shellcheck: | $(BIN)/python
	command -v shellcheck >/dev/null || (apt-get update -qq && $(APT_INSTALL) shellcheck)
	touch $@

container-tools:
	@for t in podman mmdebstrap eatmydata runc; do command -v $$t >/dev/null || missing=1; done; \
	  [ -z "$$missing" ] || (apt-get update -qq && $(APT_INSTALL) podman mmdebstrap eatmydata runc uidmap fuse-overlayfs slirp4netns)

test: $(STAMP) $(CHECKOV) $(VENV)/.shellcheck
	$(BIN)/ruff check src components pipelines tests benchmarks
	$(BIN)/mypy
	$(BIN)/mlsec threats check
	MLSEC_CHECKOV=$(CHECKOV) $(BIN)/python -m pytest -q -m "not slow"

# The whole chain under kfp.local (a subprocess per task, each importing torch): minutes, so a target of its own.
test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

compile: $(STAMP)
	$(BIN)/mlsec compile -o pipeline.yaml

bench: $(STAMP)
	for b in benchmarks/bench_*.py; do $(BIN)/python $$b || exit 1; done

# schemathesis over the served OpenAPI: 3,200 cases over V1 and V2; prints the count of server errors (must be 0).
fuzz: $(STAMP)
	MLSEC_FUZZ_CASES=3200 $(BIN)/python -m pytest -q -s tests/test_serve_fuzz.py -k openapi

clean:
	rm -rf .mlsec local_outputs pipeline.yaml

# ---- Containers (issue 14): podman with the project's own config (containers/), never /etc. ----
# `make image` builds the Dockerfile and records its digest in build/image.ref (REF@sha256:...), which
# `make compile-image`, `make demo-containers` and the container tests use.
# CONTAINERS_STORAGE_CONF: another storage root, e.g. a fresh one to time a build from scratch.
CONTAINERS_STORAGE_CONF ?= $(CURDIR)/containers/storage.conf
PODMAN_ENV    := CONTAINERS_CONF=$(CURDIR)/containers/containers.conf CONTAINERS_STORAGE_CONF=$(CONTAINERS_STORAGE_CONF)
PODMAN        := $(PODMAN_ENV) podman
IMAGE_NAME    ?= localhost/mlsec
# Where docker.io is reachable: make image BASE_IMAGE=docker.io/library/python:3.11-slim-bookworm
BASE_IMAGE    ?= localhost/mlsec-base:bookworm
DEBIAN_MIRROR ?= http://deb.debian.org/debian
DEBIAN_SECURITY_MIRROR ?= http://deb.debian.org/debian-security
TORCH_VARIANT ?= cpu
# Where the torch wheel of TORCH_VARIANT comes from when the host's pip find-links dir does not hold it.
WHEELS        ?= $(firstword $(shell $(PYTHON) -m pip config get global.find-links 2>/dev/null))
TORCH_INDEX   ?= $(if $(wildcard $(WHEELS)/torch-2.13.0+$(TORCH_VARIANT)-*.whl),,https://download.pytorch.org/whl/$(TORCH_VARIANT))
# The image's exact pins (the tested venv's versions, containers/lock.py) and their wheels, downloaded once with
# the host's pip; the build mounts the wheelhouse read-only and installs offline.
IMAGE_SPEC    := build/image-$(TORCH_VARIANT)
WHEELHOUSE    := build/wheelhouse

.PHONY: container-tools image base-image demo-containers test-containers compile-image image-attest

# A localhost/ base is made here with mmdebstrap (no registry needed); any other is pulled by the build.
base-image: container-tools
	@case "$(BASE_IMAGE)" in localhost/*) \
	  $(PODMAN) image exists $(BASE_IMAGE) || \
	  $(PODMAN_ENV) containers/base-image.sh $(BASE_IMAGE) $(DEBIAN_MIRROR) $(DEBIAN_SECURITY_MIRROR);; esac

$(IMAGE_SPEC)/requirements.txt: $(STAMP) pyproject.toml containers/lock.py
	$(BIN)/python containers/lock.py $(IMAGE_SPEC) --torch-variant $(TORCH_VARIANT) opa-golib-python-bindings==0.4.4

$(WHEELHOUSE)/.$(TORCH_VARIANT): $(IMAGE_SPEC)/requirements.txt containers/wheelhouse.sh
	containers/wheelhouse.sh $(BIN)/pip $(IMAGE_SPEC) $(WHEELHOUSE) $(TORCH_INDEX)
	touch $@

image: base-image $(WHEELHOUSE)/.$(TORCH_VARIANT)
	$(PODMAN) build --layers --pull=missing -f Dockerfile -t $(IMAGE_NAME):$(TORCH_VARIANT) \
	  --build-arg BASE_IMAGE=$(BASE_IMAGE) --build-arg SPEC=$(IMAGE_SPEC) --build-arg TORCH_VARIANT=$(TORCH_VARIANT) \
	  --build-arg REVISION=$$(git rev-parse HEAD 2>/dev/null || echo unknown) \
	  --volume $(CURDIR)/$(WHEELHOUSE):/wheels:ro .
	echo "$(IMAGE_NAME)@$$($(PODMAN) image inspect --format '{{.Digest}}' $(IMAGE_NAME):$(TORCH_VARIANT))" > build/image.ref
	@echo "image: $$(cat build/image.ref)"

build/image.ref:
	$(MAKE) image

# The pipeline with every task in the image over podman's socket; prints the same gate table as `make demo`.
demo-containers: $(STAMP) build/image.ref
	CONTAINERS_STORAGE_CONF=$(CONTAINERS_STORAGE_CONF) $(BIN)/mlsec run --containers --home .mlsec/containers

# Container tests (the image is built once and cached by podman's layers; a source change rebuilds one layer).
test-containers: $(STAMP) image
	MLSEC_CONTAINER_TESTS=1 CONTAINERS_STORAGE_CONF=$(CONTAINERS_STORAGE_CONF) $(BIN)/python -m pytest -q tests/test_containers.py

compile-image: $(STAMP) build/image.ref
	$(BIN)/mlsec compile --image "$$(cat build/image.ref)" -o pipeline.yaml

# The slower training proofs (issue 13: adversarial training, overfitting vs membership inference, DP-SGD,
# watermark and the server's check): each trains its own models, so they stay out of `make test`.
test-train-trust: $(STAMP)
	MLSEC_TRAIN_TRUST=1 $(BIN)/python -m pytest -q tests/test_train_trust.py

# The image's CycloneDX SBOM (from its own installed packages) and its signature with the model signing key over
# the image digest: build/image.cdx.json, build/image.sig.json (the cluster gets it as ConfigMap mlsec-image-signature).
SIGNING_KEY_DIR ?= .mlsec/keys
image-attest: $(STAMP) build/image.ref
	$(BIN)/python -c 'from pathlib import Path; from mlsec.sign.keys import ensure; ensure(Path("$(SIGNING_KEY_DIR)"))'
	CONTAINERS_STORAGE_CONF=$(CONTAINERS_STORAGE_CONF) $(BIN)/python -m mlsec.imagesig sbom "$$(cat build/image.ref)" build/image.cdx.json
	$(BIN)/python -m mlsec.imagesig sign "$$(cat build/image.ref)" build/image.cdx.json $(SIGNING_KEY_DIR)/signing.key build/image.sig.json
	$(BIN)/python -m mlsec.imagesig verify "$$(cat build/image.ref)" build/image.sig.json $(SIGNING_KEY_DIR)/signing.pub build/image.cdx.json

# Cost as the registry, audit log and models grow (issue 17): ~30 min on 2 cores; --quick in ~5.
bench-scale: $(STAMP)
	$(BIN)/python benchmarks/bench_scale.py

bench-scale-quick: $(STAMP)
	$(BIN)/python benchmarks/bench_scale.py --quick

# The threat model proves itself: every control removed in turn (Rego rule cut from a copy of the policies,
# code control switched off) must make a linked test fail; every Rego mutant (not make test's sample) killed
# or documented; the report regenerated for CI's artefacts. Slow (tens of minutes: one pytest run per code control).
.PHONY: prove
prove: $(STAMP)
	$(BIN)/mlsec threats check --prove
	MLSEC_MUTANTS=all $(BIN)/python -m pytest -q tests/test_policy_mutations.py
	$(BIN)/mlsec threats report -o local_outputs/threat-report

# Key rotation through prod (issue 15, T23): dev → staging → prod, rotate, pull prod with the new key alone and
# serve it over HTTP. ~40 s on 2 cores; make test plays the same rotation on dev.
.PHONY: test-rotation
test-rotation: $(STAMP)
	MLSEC_ROTATION_PROD=1 $(BIN)/python -m pytest -q tests/test_incident_rotate.py
