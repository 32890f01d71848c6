# syntax=docker/dockerfile:1
# The triton-operator image: the operator (`triton-operator run`) and the staging Jobs it launches run it.
# Build from the repository root: docker build -t ghcr.io/tritonoperator/triton-operator:0.1.0 .

# Stage 1: build wheels of the project and its dependencies; setuptools and pip caches stay here.
# The native traffic router (a Triton backend in C++, .ci/build-router.sh) is built first: the wheel
# carries it beside render/router.py (MANIFEST.in), and the operator sends it with each router load.
FROM python:3.11-slim AS build
WORKDIR /src
RUN apt-get update && apt-get install -y --no-install-recommends g++ curl ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY . .
RUN TRITON_SANDBOX_CACHE=/tmp/cache .ci/build-router.sh \
    && pip wheel --no-cache-dir --disable-pip-version-check --wheel-dir /wheels .

# Stage 2: only the installed wheels; no compiler, no build backend, no sources.
FROM python:3.11-slim
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="triton-operator" \
      org.opencontainers.image.description="Kubernetes operator for NVIDIA Triton Inference Server" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/tritonoperator/triton-operator" \
      org.opencontainers.image.url="https://github.com/tritonoperator/triton-operator"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/tmp
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels triton-operator \
    && pip uninstall -y setuptools wheel \
    && groupadd --gid 1000 triton \
    && useradd --uid 1000 --gid 1000 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin triton
# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 1000:1000
WORKDIR /tmp
ENTRYPOINT ["triton-operator"]
CMD ["run"]
