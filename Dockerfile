# syntax=docker/dockerfile:1
# The orchestrator image: the package's wheel and its runtime dependencies in a venv, run as uid 10001.

ARG PYTHON_IMAGE=python:3.11-slim

# --- build: the wheel, then a venv holding it and its runtime dependencies (no dev extras) ---
FROM ${PYTHON_IMAGE} AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /src
COPY pyproject.toml README.md ./
COPY orchestrator/ orchestrator/

# The venv has no pip of its own: the build stage's pip installs into it, so none ships in the image.
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
 && python -m venv --without-pip /opt/venv \
 && python -m pip --python /opt/venv/bin/python install /wheels/*.whl

# --- runtime ---
FROM ${PYTHON_IMAGE}

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    ORCHESTRATOR_PLAYBOOKS_DIR=/app/playbooks

# /var/lib/orchestrator holds the generated fingerprint key; a named volume mounted there starts with this owner.
RUN groupadd --system --gid 10001 orchestrator \
 && useradd --system --uid 10001 --gid orchestrator --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin orchestrator \
 && install -d -o 10001 -g 10001 -m 0700 /var/lib/orchestrator

COPY --from=build /opt/venv /opt/venv
COPY playbooks/ /app/playbooks/

WORKDIR /app
USER 10001:10001
EXPOSE 8080

# `orchestrator run` drains in-flight work, audits and commits on SIGTERM, then exits 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["orchestrator"]
CMD ["run"]
