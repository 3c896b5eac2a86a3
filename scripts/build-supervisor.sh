#!/usr/bin/env bash
# Build the sandbox supervisor, a static binary, into src/hatchway/sandbox/bin/hatchway-supervisor.
# Idempotent: does nothing when the binary is newer than every file in sandbox/supervisor/. Installs a C compiler
# and the static C library with apt-get when they are missing (as root on Debian/Ubuntu).
set -euo pipefail
cd "$(dirname "$0")/.."

src=src/hatchway/sandbox/supervisor
out=src/hatchway/sandbox/bin/hatchway-supervisor

if [ -x "$out" ] && [ -z "$(find "$src" -newer "$out" -print -quit)" ]; then
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

mkdir -p "$(dirname "$out")"
tmp=$(mktemp "$(dirname "$out")/.hatchway-supervisor.XXXXXX")
trap 'rm -f "$tmp"' EXIT
cc -static -O2 -Wall -Wextra -Werror -o "$tmp" "$src"/*.c
chmod 755 "$tmp"
mv -f "$tmp" "$out"
trap - EXIT
echo "built $out"
