# syntax=docker/dockerfile:1
# The one image every pipeline task and the model server run in. Build it with `make image` (podman), which
# records the image digest in build/image.ref; `mlsec compile --image REF@sha256:...` pins every task to it.
#   BASE_IMAGE    a Debian bookworm base with python3 and python3-venv: the public slim Python image where a
#                 registry is reachable, containers/base-image.sh (mmdebstrap) where it is not
#   TORCH_VARIANT cpu (default) or a CUDA build such as cu126: the CUDA variant of the same image
# Offline by design: `make image` pins the runtime dependencies to the versions of the project's tested venv
# (containers/lock.py: build/image-<variant>/torch.txt and requirements.txt), downloads those wheels once with the
# host's pip (its index, proxy and CA settings) into build/wheelhouse, and mounts that read-only at /wheels; the
# build installs from there alone (--no-index). No index, credential or CA bundle reaches the build.
# One stage: the venv is installed where it runs, not copied from a build stage (copying and committing the
# 2 GB venv twice cost minutes); the base has no compiler, and nothing here leaves a cache or secret behind.
# checkov:skip=CKV_DOCKER_7: FROM ${BASE_IMAGE} is a build argument checkov cannot resolve; its default is a
#   version tag (3.11-slim-bookworm), and `make image` passes a base it built here itself.
ARG BASE_IMAGE=docker.io/library/python:3.11-slim-bookworm
FROM ${BASE_IMAGE}
ARG SPEC=build/image-cpu
# checkov:skip=CKV_DOCKER_2: no HEALTHCHECK on purpose: the same image runs short-lived pipeline tasks, and the
#   server's health is checked by the Kubernetes readiness/liveness probes in helm/mlsec (Docker's is ignored there).
RUN groupadd --gid 10001 mlsec && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin mlsec
# pip options as arguments, not ENV: the image keeps no pip setting.
ARG PIP="/opt/venv/bin/pip --no-cache-dir --disable-pip-version-check install --no-index --find-links /wheels --no-compile"
# torch and its dependencies first: the largest install, redone only when their pins or the variant change. The
# pins are copied in (not mounted) so that a changed pin invalidates the layer cache; the pins fix the wheels.
# Bytecode is compiled on every core (pip compiles on one); like pip, a file that is not Python 3.11 (torch
# ships a 3.12-only test module) is skipped.
COPY ${SPEC}/torch.txt /opt/mlsec/torch.txt
RUN test -d /wheels || { echo "no wheelhouse at /wheels: build with make image" >&2; exit 1; }; \
    python3 -m venv /opt/venv && $PIP -r /opt/mlsec/torch.txt \
 && { /opt/venv/bin/python -m compileall -qq -j 0 /opt/venv/lib || true; }
COPY ${SPEC}/requirements.txt /opt/mlsec/requirements.txt
# --ignore-requires-python: the OPA engine's wheel claims Python>=3.14 but runs on 3.11 (as in the venv).
RUN $PIP --ignore-requires-python -r /opt/mlsec/requirements.txt \
 && { /opt/venv/bin/python -m compileall -qq -j 0 /opt/venv/lib || true; }
COPY pyproject.toml README.md /opt/mlsec/src/
COPY src /opt/mlsec/src/src
COPY components /opt/mlsec/src/components
COPY pipelines /opt/mlsec/src/pipelines
RUN /opt/venv/bin/pip --no-cache-dir install --no-deps --no-build-isolation /opt/mlsec/src && rm -rf /opt/mlsec/src/build \
 && /opt/venv/bin/pip check
COPY policies /opt/mlsec/policies
COPY data /opt/mlsec/data
COPY helm/mlsec /opt/mlsec/chart
# No compilers, no pip cache, no secrets: keys and credentials arrive as mounted Secrets at run time.
# GOGC/GOMEMLIMIT: see mlsec.gates.engine.GO_RUNTIME_ENV (the OPA engine's GC tail latency).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    MLSEC_POLICY_DIR=/opt/mlsec/policies \
    MLSEC_CONTRACT=/opt/mlsec/data/credit_contract.yaml \
    MLSEC_SAMPLE_DATA=/opt/mlsec/data/credit_sample.csv \
    MLSEC_CHART_DIR=/opt/mlsec/chart \
    MLSEC_HOME=/tmp/mlsec \
    GX_ANALYTICS_ENABLED=false \
    GOGC=off GOMEMLIMIT=256MiB
# Last, so that a new revision only relabels the image.
ARG TORCH_VARIANT=cpu
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="mlsec" \
      org.opencontainers.image.description="OPA-gated ML pipeline tasks and model server" \
      org.opencontainers.image.source="https://github.com/mlsec/mlsec" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      io.mlsec.torch-variant="${TORCH_VARIANT}"
USER 10001:10001
ENTRYPOINT ["mlsec"]
