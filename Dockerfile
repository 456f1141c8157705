# syntax=docker/dockerfile:1
# pi-opt service image: the REST API (`pi-opt serve`) and job workers (`pi-opt worker`).
#
#   docker build -t pi-opt .                      # or: podman build --format docker -t pi-opt .
#   docker compose up                             # the scale-out stack (docker-compose.yml)
#
# Two stages: `build` makes a virtual environment in /opt/venv (pip, wheel builds), the
# runtime stage copies only that environment onto a fresh base (no compilers, no pip cache,
# no test dependencies) and runs as the unprivileged user `pi-opt`.
#
# Offline builds: put wheels in deploy/wheels/ (e.g. `pip download -d deploy/wheels ...`)
# and pass `--build-arg PIP_NO_INDEX=1`; deploy/check.sh does exactly that. Built and run
# with podman by `make image-check` (see deploy/README.md).
FROM python:3.11-slim AS build

# Where torch comes from when online (the CPU-only wheel index); "1" installs from
# deploy/wheels/ only.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG PIP_NO_INDEX=0
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_FIND_LINKS=/wheels \
    PATH=/opt/venv/bin:$PATH

RUN python -m venv /opt/venv
COPY deploy/wheels/ /wheels/

# CPU-only torch (same version as pyproject's pin).
RUN pip install --index-url "$TORCH_INDEX_URL" torch==2.13.0

# CrypTen 0.4.1's wheel declares the defunct `sklearn` package, so a plain install fails:
# install it without dependencies; its real dependencies come with the package's `mpc` extra.
RUN pip install --no-deps crypten==0.4.1

# The package (not editable) with its service, report and mpc extras.
WORKDIR /src
COPY pyproject.toml README.md ./
COPY pi_opt ./pi_opt
COPY pi_opt_cli ./pi_opt_cli
COPY service ./service
COPY mpc ./mpc
RUN pip install ".[service,report,mpc]" \
 && find /opt/venv -name __pycache__ -prune -exec rm -rf {} +


FROM python:3.11-slim AS runtime

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    PI_OPT_DATA_DIR=/data \
    PI_OPT_HOST=0.0.0.0 \
    PI_OPT_PORT=8000

RUN useradd --create-home --uid 10001 pi-opt \
 && mkdir -p /data && chown pi-opt:pi-opt /data
COPY --from=build /opt/venv /opt/venv

USER pi-opt
WORKDIR /home/pi-opt
VOLUME ["/data"]
EXPOSE 8000

# The API's health endpoint. Worker containers (same image) disable it in docker-compose.yml.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD python -c "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/v1/health' % os.environ.get('PI_OPT_PORT', '8000'), timeout=4)" || exit 1

CMD ["pi-opt", "serve"]
