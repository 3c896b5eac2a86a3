#!/usr/bin/env bash
# Make sure a local image registry answers on 127.0.0.1:5000, for the tests that pull through a real registry
# (Docker trusts registries on 127.0.0.0/8 over plain HTTP). Uses Debian's docker-registry (the CNCF
# distribution registry), installed if missing, with no authentication and its storage under
# /var/lib/hatchway-registry. A registry that already answers is used as it is. Idempotent.
set -euo pipefail

state_dir=/var/lib/hatchway-registry
log_file=/var/log/hatchway-registry.log
address=127.0.0.1:5000

answers() { curl -fsS -o /dev/null --max-time 2 "http://$address/v2/" 2>/dev/null; }

if answers; then
  exit 0
fi

if ! command -v docker-registry >/dev/null 2>&1; then
  echo "installing Debian's docker-registry ..."
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq docker-registry >/dev/null || { apt-get update -qq && apt-get install -y -qq docker-registry >/dev/null; }
fi

mkdir -p "$state_dir/storage"
# Our own configuration, not the package's: loopback only, no htpasswd, deletes allowed.
cat > "$state_dir/config.yml" <<YAML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $state_dir/storage
  delete:
    enabled: true
http:
  addr: $address
YAML

echo "starting docker-registry on $address ..."
nohup setsid docker-registry serve "$state_dir/config.yml" >>"$log_file" 2>&1 </dev/null &
echo $! > "$state_dir/registry.pid"

for _ in $(seq 1 40); do
  if answers; then
    echo "registry is up on $address"
    exit 0
  fi
  sleep 0.25
done
echo "docker-registry did not answer within 10 s; see $log_file" >&2
tail -20 "$log_file" >&2 || true
exit 1
