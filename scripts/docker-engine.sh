#!/usr/bin/env bash
# Make sure a Docker engine answers, with gVisor's runsc registered as runtime "runsc". Idempotent.
# - A daemon that already answers is used as it is; if it lacks runsc, the runtime is merged into the
#   daemon's config file and the daemon reloads it (SIGHUP): nothing running is restarted.
# - Otherwise Debian's docker.io is installed if needed and dockerd is started with no default bridge and
#   no iptables, so job containers only ever get network "none" or "host".
# runsc runs with --network=none: gVisor jobs get no network of their own here.
set -euo pipefail

state_dir=/var/lib/hatchway-engine
log_file=/var/log/hatchway-dockerd.log
export DEBIAN_FRONTEND=noninteractive

apt_install() {
  apt-get update -qq
  apt-get install -y -qq "$@" >/dev/null
}

command -v runsc >/dev/null 2>&1 || { echo "installing Debian's runsc (gVisor) ..."; apt_install runsc; }
runsc_path=$(command -v runsc)

has_runsc() { docker info --format '{{json .Runtimes}}' 2>/dev/null | grep -q '"runsc"'; }

# Merge the runsc runtime into a daemon.json (creating it if needed), keeping everything else in it.
register_runsc() {
  python3 - "$1" "$runsc_path" <<'PY'
import json, os, sys
path, runsc = sys.argv[1], sys.argv[2]
config = {}
if os.path.exists(path):
    with open(path) as f:
        config = json.load(f)
config.setdefault("runtimes", {})["runsc"] = {"path": runsc, "runtimeArgs": ["--network=none"]}
os.makedirs(os.path.dirname(path), exist_ok=True)
with open(path + ".tmp", "w") as f:
    json.dump(config, f, indent=2)
os.replace(path + ".tmp", path)
PY
}

if docker info >/dev/null 2>&1; then
  if ! has_runsc; then
    pid=$(pidof dockerd | awk '{print $1}')
    config=/etc/docker/daemon.json
    if [ -n "$pid" ]; then
      from_cmdline=$(tr '\0' '\n' < "/proc/$pid/cmdline" | awk 'f{print;exit} /^--config-file$/{f=1} /^--config-file=/{sub(/^--config-file=/,"");print;exit}')
      [ -n "$from_cmdline" ] && config=$from_cmdline
    fi
    echo "registering runsc with the running Docker engine ($config) ..."
    register_runsc "$config"
    [ -n "$pid" ] && kill -HUP "$pid"
    for _ in $(seq 1 20); do has_runsc && break; sleep 0.5; done
    has_runsc || echo "warning: the engine did not pick up runsc; gVisor jobs will be refused" >&2
  fi
  exit 0
fi

command -v dockerd >/dev/null 2>&1 || { echo "installing Debian's docker.io ..."; apt_install docker.io; }

mkdir -p "$state_dir"
echo '{"bridge": "none", "iptables": false, "ip6tables": false}' > "$state_dir/daemon.json"
register_runsc "$state_dir/daemon.json"

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
