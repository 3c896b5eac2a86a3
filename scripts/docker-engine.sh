#!/usr/bin/env bash
# Make sure a Docker engine answers. A daemon that already answers is used as it is; otherwise Debian's
# docker.io is installed if needed and dockerd is started with no default bridge and no iptables, so job
# containers only ever get network "none" or "host". Idempotent.
set -euo pipefail

state_dir=/var/lib/hatchway-engine
log_file=/var/log/hatchway-dockerd.log

if docker info >/dev/null 2>&1; then
  exit 0
fi

if ! command -v dockerd >/dev/null 2>&1; then
  echo "installing Debian's docker.io ..."
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq docker.io >/dev/null
fi

mkdir -p "$state_dir"
cat > "$state_dir/daemon.json" <<JSON
{
  "bridge": "none",
  "iptables": false,
  "ip6tables": false
}
JSON

echo "starting dockerd (no default bridge, no iptables) ..."
nohup dockerd --config-file "$state_dir/daemon.json" >>"$log_file" 2>&1 &

for _ in $(seq 1 60); do
  if docker info >/dev/null 2>&1; then
    echo "Docker engine is up"
    exit 0
  fi
  sleep 0.5
done
echo "dockerd did not answer within 30 s; see $log_file" >&2
tail -20 "$log_file" >&2 || true
exit 1
