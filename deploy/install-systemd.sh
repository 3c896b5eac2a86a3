#!/usr/bin/env bash
# Install hatchway from this checkout as the systemd service `hatchway` (as root, on a systemd host):
#   /opt/hatchway/.venv        hatchway and the sandbox supervisor
#   /etc/hatchway/config.yaml  its configuration (an example is written if there is none; kept otherwise)
#   /var/lib/hatchway          its data (StateDirectory)
# then enable and (re)start it. Idempotent. The template hatchway@.service, for several workers of a fleet on one
# host (docs/fleet.md), is installed beside it and left for you to enable, instance by instance. The Docker engine is the host's docker.service; give it
# "live-restore": true in /etc/docker/daemon.json so running jobs survive an engine restart.
#   deploy/install-systemd.sh [--root DIR] [--no-start]
set -euo pipefail
cd "$(dirname "$0")/.."

root=""
start=true
while [ $# -gt 0 ]; do
  case "$1" in
    --root) root="$2"; shift 2 ;;
    --no-start) start=false; shift ;;
    *) echo "usage: deploy/install-systemd.sh [--root DIR] [--no-start]" >&2; exit 2 ;;
  esac
done

scripts/build-supervisor.sh
prefix="$root/opt/hatchway"
install -d "$prefix" "$root/etc/systemd/system"
[ -x "$prefix/.venv/bin/python" ] || python3 -m venv "$prefix/.venv"
"$prefix/.venv/bin/pip" install --quiet --upgrade .
binary=$("$prefix/.venv/bin/python" -c 'from hatchway.sandbox.binary import BINARY; print(BINARY)')
install -D -m 0755 src/hatchway/sandbox/bin/hatchway-supervisor "$binary"
install -m 0644 README.md "$prefix/README.md"
install -d -m 0750 "$root/etc/hatchway"
[ -f "$root/etc/hatchway/config.yaml" ] || install -m 0640 deploy/config.example.yaml "$root/etc/hatchway/config.yaml"
install -m 0644 deploy/hatchway.service "$root/etc/systemd/system/hatchway.service"
install -m 0644 deploy/hatchway@.service "$root/etc/systemd/system/hatchway@.service"

if $start && [ -z "$root" ]; then
  if ! grep -qs '"live-restore": *true' /etc/docker/daemon.json; then
    echo "note: /etc/docker/daemon.json does not set \"live-restore\": true; jobs will not survive an engine restart" >&2
  fi
  systemctl daemon-reload
  systemctl enable hatchway >/dev/null
  systemctl restart hatchway
  echo "hatchway is running: systemctl status hatchway; journalctl -u hatchway -f"
fi
