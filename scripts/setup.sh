#!/usr/bin/env bash
# Set up everything hatchway needs on a Debian/Ubuntu machine, as root: system packages, a Docker engine,
# a virtualenv (.venv) with hatchway installed, and the grading sandbox's static supervisor.
# Idempotent: a second run changes nothing.
#   scripts/setup.sh         what the worker needs
#   scripts/setup.sh --dev   plus the test and lint tools, the test images' build tools, and chromium
set -euo pipefail
cd "$(dirname "$0")/.."

dev=false
[ "${1:-}" = "--dev" ] && dev=true

need=()
command -v dockerd >/dev/null 2>&1 || docker info >/dev/null 2>&1 || need+=(docker.io)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3-venv)
command -v mmdebstrap >/dev/null 2>&1 || need+=(mmdebstrap)  # language profiles' local images
command -v mkfs.ext4 >/dev/null 2>&1 || need+=(e2fsprogs)     # each job's size-limited disk
command -v losetup >/dev/null 2>&1 || need+=(mount)
command -v file >/dev/null 2>&1 || need+=(file)
# hatchway-test/busybox (scripts/test-images.sh): the README's first job and the tests run in it
[ -x /bin/busybox ] && file -L /bin/busybox 2>/dev/null | grep -q static || need+=(busybox-static)
if $dev; then
  command -v curl >/dev/null 2>&1 || need+=(curl)
  command -v docker-registry >/dev/null 2>&1 || need+=(docker-registry)  # a real registry for pull tests
  command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)  # checks the service unit (deploy/)
  # The dashboard's tests drive this chromium through Playwright (no browser download is possible here). On
  # Ubuntu, apt's chromium is a snap wrapper that does not run in containers: point HATCHWAY_CHROMIUM at one.
  command -v chromium >/dev/null 2>&1 || [ -n "${HATCHWAY_CHROMIUM:-}" ] || need+=(chromium)
fi
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]} ..."
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi

scripts/docker-engine.sh

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
extras=""
$dev && extras="[dev]"
stamp=".venv/.installed$extras"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e ".$extras"
  touch "$stamp"
fi

scripts/build-supervisor.sh
