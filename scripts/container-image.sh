#!/usr/bin/env bash
# Build hatchway's own image, hatchway:VERSION and hatchway:latest, without a registry: the base is a Debian 12
# root filesystem made here with mmdebstrap (python3, e2fsprogs, mount) and imported as hatchway-base:bookworm;
# hatchway and its dependencies go in as wheels (from PyPI), with the static sandbox supervisor.
# Idempotent: the base is made once; the image is rebuilt from the current checkout.
#   scripts/container-image.sh            build
#   scripts/container-image.sh --print    print the image's name only (after building)
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh >/dev/null
base=hatchway-base:bookworm
if ! docker image inspect "$base" >/dev/null 2>&1; then
  echo "making $base with mmdebstrap (a few minutes, once) ..." >&2
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  mmdebstrap --quiet --variant=apt '--aptopt=APT::Install-Recommends "false"' \
    --include=python3,python3-venv,e2fsprogs,mount,ca-certificates \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
    --customize-hook='rm -rf "$1"/var/cache/apt/* "$1"/var/lib/apt/lists/*' \
    bookworm "$work/rootfs.tar" >&2
  docker import --change 'ENV LANG=C.UTF-8' "$work/rootfs.tar" "$base" >/dev/null
fi

version=$(.venv/bin/python -c 'import hatchway; print(hatchway.__version__)')
context=build/image
rm -rf "$context"
mkdir -p "$context/wheels"
# pip resolves on this machine's Python; the image runs Debian 12's (3.11.2), for which redis also needs
# async-timeout (its marker: Python below 3.11.3), so it goes in by name.
.venv/bin/pip wheel --quiet --wheel-dir "$context/wheels" . 'async-timeout>=4.0.3' >&2
cp src/hatchway/sandbox/bin/hatchway-supervisor "$context/"
# No default bridge on this engine: the build's RUN steps need no network (everything is in the context).
docker build --quiet --network none -f deploy/Dockerfile -t "hatchway:$version" -t hatchway:latest "$context" >/dev/null
echo "hatchway:$version"
