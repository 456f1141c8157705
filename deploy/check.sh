#!/usr/bin/env bash
# Build and run the pi-opt image and the docker-compose stack with podman, on a machine
# that cannot pull container images (`make image-check`; not part of the test suite).
#
#   deploy/check.sh [--only image|stack] [--rebuild-bases] [--remove-image] [--two-jobs]
#
# 1. prerequisites (podman, runc, debootstrap, netavark, iptables, python3 >= 3.11 with venv)
# 2. local stand-ins for the base images the Dockerfile / docker-compose.yml name
#    (python:3.11-slim, postgres:15) from a `debootstrap --variant=minbase bookworm` base
#    plus Debian packages; kept between runs unless --rebuild-bases
# 3. an offline wheelhouse (deploy/wheels/, git-ignored) filled by the host's own pip
#    settings, then the project image from the unchanged Dockerfile (PIP_NO_INDEX=1)
# 4. image checks (size, non-root, no compilers or test packages, health check) and a job
#    through one container (SQLite, embedded worker): health, key, job, report
# 5. the compose stack (api + 2 workers + postgres) via podman-compose: a job whose trials
#    both workers run, one worker killed mid-job, the job still finishing with that worker's
#    trials (--two-jobs: first a job without a kill); `down` leaves nothing
#
# Environment: DEBIAN_MIRROR (default http://deb.debian.org/debian), PI_OPT_CHECK_PORT.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK="$ROOT/deploy/.work"
ONLY=all REBUILD_BASES=0 KEEP_IMAGE=1 STACK_ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --only) ONLY=$2; shift 2 ;;
    --rebuild-bases) REBUILD_BASES=1; shift ;;
    --keep-image) KEEP_IMAGE=1; shift ;;
    --two-jobs) STACK_ARGS+=(--two-jobs); shift ;;
    --remove-image) KEEP_IMAGE=0; shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "deploy/check.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

BASE_IMAGE=localhost/pi-opt-standin/debian:bookworm
PY_IMAGE=docker.io/library/python:3.11-slim
PG_IMAGE=docker.io/library/postgres:15
IMAGE=localhost/pi-opt:latest
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
export CONTAINERS_CONF="$ROOT/deploy/containers.conf"

say() { printf '[check %s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }
die() { printf 'deploy/check.sh: %s\n' "$*" >&2; exit 1; }

# ---- 1. prerequisites: one line naming what is missing and how to install it ----------
missing=() pkgs=()
for pair in podman:podman runc:runc debootstrap:debootstrap netavark:netavark \
            aardvark-dns:aardvark-dns iptables:iptables; do
  cmd=${pair%%:*} pkg=${pair#*:}
  if ! command -v "$cmd" >/dev/null 2>&1 && [ ! -x "/usr/lib/podman/$cmd" ]; then
    missing+=("$cmd"); pkgs+=("$pkg")
  fi
done
if ! python3 -c 'import sys, venv; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  missing+=("python3>=3.11 with venv"); pkgs+=(python3 python3-venv)
fi
if [ ${#missing[@]} -gt 0 ]; then
  die "missing ${missing[*]}: install with \`apt-get install -y ${pkgs[*]}\` (as root)"
fi
[ "$(id -u)" = 0 ] || die "needs root (rootful podman and debootstrap): run with sudo"
mkdir -p "$WORK"
say "podman $(podman version --format '{{.Client.Version}}'), runtime runc, load: $(cut -d' ' -f1-3 /proc/loadavg)"

# ---- 2. stand-in base images ------------------------------------------------------------
if [ "$REBUILD_BASES" = 1 ]; then
  podman rmi -f "$PY_IMAGE" "$PG_IMAGE" "$BASE_IMAGE" >/dev/null 2>&1 || true
fi
if ! podman image exists "$BASE_IMAGE"; then
  say "debootstrap --variant=minbase bookworm ($MIRROR) -> $BASE_IMAGE"
  rm -rf "$WORK/rootfs"
  t0=$SECONDS
  nice debootstrap --variant=minbase bookworm "$WORK/rootfs" "$MIRROR" > "$WORK/debootstrap.log" 2>&1 \
    || die "debootstrap failed (log: $WORK/debootstrap.log)"
  tar -C "$WORK/rootfs" -c . | podman import -q --change 'CMD ["/bin/bash"]' - "$BASE_IMAGE" >/dev/null
  rm -rf "$WORK/rootfs"
  say "base image in $((SECONDS - t0)) s"
fi
for pair in "$PY_IMAGE:python" "$PG_IMAGE:postgres"; do
  img=${pair%:*} name=${pair##*:}
  if ! podman image exists "$img"; then
    say "stand-in $img from deploy/standins/$name.Containerfile"
    t0=$SECONDS
    nice podman build --pull=never --format docker --network host -q \
      -f "$ROOT/deploy/standins/$name.Containerfile" -t "$img" "$ROOT/deploy/standins" \
      > "$WORK/standin-$name.log" 2>&1 || die "stand-in build failed (log: $WORK/standin-$name.log)"
    say "stand-in $img in $((SECONDS - t0)) s"
  fi
done

# ---- 3. wheelhouse + project image -----------------------------------------------------
build_image() {
  say "wheelhouse deploy/wheels/ (host pip settings: pip download)"
  ( cd "$ROOT" &&
    nice python3 -m pip download -q -d deploy/wheels --no-deps torch==2.13.0 crypten==0.4.1 &&
    nice python3 -m pip download -q -d deploy/wheels torch==2.13.0 ".[service,report,mpc]" \
      setuptools wheel ) > "$WORK/wheels.log" 2>&1 || die "pip download failed (log: $WORK/wheels.log)"
  say "wheelhouse: $(ls "$ROOT"/deploy/wheels/*.whl | wc -l) wheels, $(du -sh "$ROOT/deploy/wheels" | cut -f1)"
  say "podman build -t $IMAGE . (Dockerfile unchanged; --build-arg PIP_NO_INDEX=1)"
  local t0=$SECONDS
  nice podman build --pull=never --format docker --network host --build-arg PIP_NO_INDEX=1 \
    -t "$IMAGE" "$ROOT" > "$WORK/build.log" 2>&1 || { tail -20 "$WORK/build.log"; die "image build failed (log: $WORK/build.log)"; }
  BUILD_S=$((SECONDS - t0))
  local size
  size=$(podman image inspect "$IMAGE" --format '{{.Size}}')
  say "image $IMAGE built in ${BUILD_S} s; size $((size / 1000000)) MB ($size bytes)"
}

# a throw-away container of the image (no systemd timer for its HEALTHCHECK)
prun() { podman run --rm --health-interval disable "$IMAGE" "$@"; }

image_checks() {
  local user uid
  user=$(podman image inspect "$IMAGE" --format '{{.Config.User}}')
  uid=$(prun id -u)
  [ "$uid" != 0 ] || die "image runs as root"
  say "runs as user '$user' (uid $uid)"
  prun sh -c 'for c in gcc cc g++ make; do command -v $c && exit 1; done; exit 0' >/dev/null \
    || die "image carries build tools"
  prun python -c "
import importlib.util as u, sys
bad = [m for m in ('pytest', 'httpx_sse', 'schemathesis', 'hypothesis') if u.find_spec(m)]
sys.exit('test packages in the image: %s' % bad if bad else 0)" || die "image carries test packages"
  prun python -c "import torch, mpc._compat as c; c.import_crypten(); print(torch.__version__)" \
    | sed 's/^/[check] torch /' | head -1
  prun pi-opt --help >/dev/null || die "the pi-opt entry point fails in the image"
  say "no compilers, no test packages; crypten imports; pi-opt --help runs"
}

PORT=${PI_OPT_CHECK_PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')}
if [ "$ONLY" != stack ]; then
  build_image
  image_checks
  say "single container: health, key, digits job, report (port $PORT)"
  python3 "$ROOT/deploy/stack_check.py" single --image "$IMAGE" --port "$PORT"
fi

# ---- 5. compose stack ------------------------------------------------------------------
if [ "$ONLY" != image ]; then
  podman image exists "$IMAGE" || die "no $IMAGE: run without --only stack first"
  if [ ! -x "$WORK/venv/bin/podman-compose" ]; then
    say "podman-compose into deploy/.work/venv (pip)"
    python3 -m venv "$WORK/venv" && "$WORK/venv/bin/pip" install -q "podman-compose>=1.1" >/dev/null 2>&1 \
      || die "pip install podman-compose failed"
  fi
  say "compose stack: $("$WORK/venv/bin/podman-compose" --version | head -1)"
  PATH="$WORK/venv/bin:$PATH" python3 "$ROOT/deploy/stack_check.py" compose \
    --compose-file "$ROOT/docker-compose.yml" --port "$PORT" ${STACK_ARGS[@]+"${STACK_ARGS[@]}"}
fi
if [ "$KEEP_IMAGE" = 0 ]; then podman rmi "$IMAGE" >/dev/null; fi
say "all checks passed"
