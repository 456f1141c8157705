# pi-opt service image: the REST API (`pi-opt serve`) and job workers (`pi-opt worker`).
#
# NOTE: CI here cannot build images (no Docker engine on the CI machines); this file is
# checked by review only. Build: `docker build -t pi-opt .`; run the scale-out stack
# with `docker compose up --build` (see docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# CPU-only torch from the PyTorch CPU wheel index (same version as pyproject's pin).
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0

# CrypTen 0.4.1's wheel declares the defunct `sklearn` package, so a plain install fails:
# install it without dependencies; its real dependencies come with the package's `mpc` extra.
RUN pip install --no-deps crypten==0.4.1

# The package with its service, report and mpc extras.
COPY pyproject.toml README* ./
COPY pi_opt ./pi_opt
COPY service ./service
COPY mpc ./mpc
RUN pip install ".[service,report,mpc]"

RUN useradd --create-home --uid 10001 pi-opt && mkdir -p /data && chown pi-opt /data
USER pi-opt
VOLUME ["/data"]
ENV PI_OPT_DATA_DIR=/data \
    PI_OPT_HOST=0.0.0.0 \
    PI_OPT_PORT=8000
EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=5s --start-period=30s \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/v1/health', timeout=4)" || exit 1

CMD ["pi-opt", "serve"]
