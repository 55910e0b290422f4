# syntax=docker/dockerfile:1
# The one image every pipeline task and the model server run in. Build it with `make image` (podman), which
# records the image digest in build/image.digest; `mlsec compile --image REF@sha256:...` pins every task to it.
#   BASE_IMAGE    a Debian bookworm base with python3 and python3-venv: the public slim Python image where a
#                 registry is reachable, containers/base-image.sh (debootstrap) where it is not
#   TORCH_VARIANT cpu (default) or a CUDA build such as cu126: the CUDA variant of the same image
#   TORCH_INDEX   where that torch wheel comes from; empty when a mounted find-links dir (/wheels) holds it
# Build secrets, never written into a layer: `ca` (the CA bundle of a TLS-re-signing network or proxy) and
# `pipconf` (a pip config), mounted by RUN --mount=type=secret for the install step only.
# checkov:skip=CKV_DOCKER_7: FROM ${BASE_IMAGE} is a build argument checkov cannot resolve; its default is a
#   version tag (3.11-slim-bookworm), and `make image` passes a base it built here itself.
ARG BASE_IMAGE=docker.io/library/python:3.11-slim-bookworm
# The runtime dependencies alone, so that the slow install below is rebuilt only when they change, not on
# every edit of pyproject.toml.
FROM ${BASE_IMAGE} AS requirements
COPY pyproject.toml /src/
RUN python3 -c 'import tomllib; print("\n".join(tomllib.load(open("/src/pyproject.toml", "rb"))["project"]["dependencies"]))' \
      > /requirements.txt

FROM ${BASE_IMAGE} AS build
ARG TORCH_VARIANT=cpu
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# /wheels: a read-only find-links dir the build may mount (podman build -v DIR:/wheels:ro). PIP_CERT and
# PIP_CONFIG_FILE point at the build secrets, set for one RUN at a time so no layer records them.
ARG PIP_SECRETS="if [ -s /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi; if [ -s /run/secrets/pipconf ]; then export PIP_CONFIG_FILE=/run/secrets/pipconf; fi; if [ -d /wheels ]; then export PIP_FIND_LINKS=/wheels; fi"
# torch alone first: the largest download, rebuilt only when its variant changes.
RUN --mount=type=secret,id=ca --mount=type=secret,id=pipconf \
    set -eu; eval "$PIP_SECRETS"; \
    pip install ${TORCH_INDEX:+--extra-index-url "$TORCH_INDEX"} "torch==2.13.0+${TORCH_VARIANT}" "setuptools>=68"
COPY --from=requirements /requirements.txt /tmp/requirements.txt
RUN --mount=type=secret,id=ca --mount=type=secret,id=pipconf \
    set -eu; eval "$PIP_SECRETS"; \
    pip install -r /tmp/requirements.txt \
 && pip install --ignore-requires-python opa-golib-python-bindings==0.4.4 \
 && rm /tmp/requirements.txt
# The same pyproject.toml the requirements came from (the context may change while a long build runs).
COPY --from=requirements /src/pyproject.toml ./
COPY README.md ./
COPY src ./src
COPY components ./components
COPY pipelines ./pipelines
RUN pip install --no-deps --no-build-isolation . && pip check

FROM ${BASE_IMAGE}
# checkov:skip=CKV_DOCKER_2: no HEALTHCHECK on purpose: the same image runs short-lived pipeline tasks, and the
#   server's health is checked by the Kubernetes readiness/liveness probes in helm/mlsec (Docker's is ignored there).
# No compilers, no pip cache, no secrets: keys and credentials arrive as mounted Secrets at run time.
# GOGC/GOMEMLIMIT: see mlsec.gates.engine.GO_RUNTIME_ENV (the OPA engine's GC tail latency).
RUN groupadd --gid 10001 mlsec && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin mlsec
COPY --from=build /opt/venv /opt/venv
COPY policies /opt/mlsec/policies
COPY data /opt/mlsec/data
COPY helm/mlsec /opt/mlsec/chart
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
