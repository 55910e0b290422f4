# syntax=docker/dockerfile:1
# The one image every pipeline task and the model server run in.
#   docker build -t mlsec .                                   (CPU torch)
#   docker build --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu124 -t mlsec:gpu .
FROM python:3.11-slim-bookworm AS build
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
COPY components ./components
COPY pipelines ./pipelines
RUN pip install --index-url "${TORCH_INDEX}" --extra-index-url https://pypi.org/simple "torch==2.13.0" \
 && pip install . \
 && pip install --ignore-requires-python opa-golib-python-bindings==0.4.4 \
 && pip check

FROM python:3.11-slim-bookworm
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
USER 10001:10001
ENTRYPOINT ["mlsec"]
