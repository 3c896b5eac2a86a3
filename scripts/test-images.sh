#!/usr/bin/env bash
# Build the small local images the tests and the README's first job use (no registry is needed); reuse them
# when present. With names (busybox, python), only those.
#   hatchway-test/busybox:latest  Debian's busybox-static with every applet linked
#   hatchway-test/python:latest   a minimal Debian bookworm with python3, made by mmdebstrap
#   hatchway-test/own-command:latest  busybox with a command of its own (CMD, WORKDIR /app): prints its working
#                                 directory, then its stdin (for jobs that run an image's own command)
#   hatchway-test/fluster-python:latest  hatchway-test/python with cloudpickle (copied from the venv's
#                                 site-packages, no network): the base of Fluster jobs in the tests
#   hatchway-test/fluster-pip:latest  hatchway-test/fluster-python with pip (the venv's too), for Fluster jobs that
#                                 install pip_packages (from a test's own server, on the host network)
set -euo pipefail

have_image() { docker image inspect "$1" >/dev/null 2>&1; }

build_busybox() {
  local tag=hatchway-test/busybox:latest root
  have_image "$tag" && return 0
  root=$(mktemp -d)
  mkdir -p "$root/bin" "$root/tmp" "$root/etc"
  chmod 1777 "$root/tmp"
  cp /bin/busybox "$root/bin/busybox"
  for applet in $("$root/bin/busybox" --list); do
    [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
  done
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/sh\n' > "$root/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' > "$root/etc/group"
  tar -C "$root" -c . | docker import --change 'ENV PATH=/bin' - "$tag" >/dev/null
  rm -rf "$root"
  echo "built $tag"
}

build_python() {
  local tag=hatchway-test/python:latest tarball
  have_image "$tag" && return 0
  tarball=$(mktemp --suffix=.tar)
  mmdebstrap --quiet --variant=apt --include=python3 bookworm "$tarball"
  docker import --change 'ENV PATH=/usr/local/bin:/usr/bin:/bin' "$tarball" "$tag" >/dev/null
  rm -f "$tarball"
  echo "built $tag"
}

build_own_command() {
  local tag=hatchway-test/own-command:latest context
  have_image "$tag" && return 0
  build_busybox
  context=$(mktemp -d)
  printf 'pwd\ncat\n' > "$context/run.sh"
  printf 'FROM hatchway-test/busybox:latest\nWORKDIR /app\nCOPY run.sh run.sh\nCMD ["sh", "run.sh"]\n' > "$context/Dockerfile"
  docker build --quiet --tag "$tag" "$context" >/dev/null
  rm -rf "$context"
  echo "built $tag"
}

build_fluster_python() {
  local tag=hatchway-test/fluster-python:latest context source
  have_image "$tag" && return 0
  build_python
  source=$(cd "$(dirname "$0")/.." && .venv/bin/python -c 'import cloudpickle, os; print(os.path.dirname(cloudpickle.__file__))')
  context=$(mktemp -d)
  cp -r "$source" "$context/cloudpickle"
  find "$context/cloudpickle" -name __pycache__ -prune -exec rm -rf {} +
  printf 'FROM hatchway-test/python:latest\nCOPY cloudpickle /usr/local/lib/python3.11/dist-packages/cloudpickle\n' \
    > "$context/Dockerfile"
  docker build --quiet --network none --tag "$tag" "$context" >/dev/null
  rm -rf "$context"
  echo "built $tag"
}

build_fluster_pip() {
  local tag=hatchway-test/fluster-pip:latest context source
  have_image "$tag" && return 0
  build_fluster_python
  source=$(cd "$(dirname "$0")/.." && .venv/bin/python -c 'import pip, os; print(os.path.dirname(pip.__file__))')
  context=$(mktemp -d)
  cp -r "$source" "$context/pip"
  find "$context/pip" -name __pycache__ -prune -exec rm -rf {} +
  printf 'FROM hatchway-test/fluster-python:latest\nCOPY pip /usr/local/lib/python3.11/dist-packages/pip\n' \
    > "$context/Dockerfile"
  docker build --quiet --network none --tag "$tag" "$context" >/dev/null
  rm -rf "$context"
  echo "built $tag"
}

# With names (busybox, python, own_command, fluster_python, fluster_pip), only those.
for name in "${@:-busybox python own_command fluster_python fluster_pip}"; do
  for one in $name; do "build_$one"; done
done
