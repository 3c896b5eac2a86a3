#!/usr/bin/env bash
# Build the sandbox supervisor, a static binary, into src/hatchway/sandbox/bin/hatchway-supervisor, with the one
# recipe in src/hatchway/sandbox/binary.py (which the package build uses too). Idempotent: does nothing while the
# binary is fresh, i.e. built from the sources in sandbox/supervisor/ as they are, with the current flags. Installs a
# C compiler and the static C library with apt-get when a build is needed and they are missing (as root on
# Debian/Ubuntu). Extra arguments go to the recipe: --force builds even a fresh binary.
set -euo pipefail
cd "$(dirname "$0")/.."

# The recipe needs only the standard library and hatchway's own errors and files modules: the system's python3
# runs it from the source tree, before any virtualenv exists.
python=${PYTHON:-python3}
recipe() { PYTHONPATH=src "$python" -m hatchway.sandbox.binary "$@"; }

if [ $# -eq 0 ] && recipe check; then
  exit 0
fi

need=()
command -v cc >/dev/null 2>&1 || need+=(gcc)
# -print-file-name echoes the bare name back when the library is not found.
if ! command -v cc >/dev/null 2>&1 || [ "$(cc -print-file-name=libc.a)" = libc.a ]; then
  need+=(libc6-dev)
fi
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]} ..."
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi

recipe build "$@"
