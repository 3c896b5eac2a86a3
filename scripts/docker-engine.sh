#!/usr/bin/env bash
# Make sure a Docker engine answers, with gVisor's runsc registered as runtime "runsc". Idempotent.
# - A daemon that already answers is used as it is; if it lacks runsc, the runtime is merged into the
#   daemon's config file and the daemon reloads it (SIGHUP): nothing running is restarted. If it runs
#   without live-restore, a warning says so (it is not changed: that would need the operator's say).
# - Otherwise Debian's docker.io is installed if needed and dockerd is started with no default bridge and
#   no iptables, so job containers only ever get network "none" or "host", and with live-restore, so
#   running containers outlive a restart of the engine (hatchway re-attaches to them).
# runsc runs with --network=none: gVisor jobs get no network of their own here.
#
# A private engine beside the system's (for tests that restart it) when HATCHWAY_ENGINE_ROOT is set:
#   HATCHWAY_ENGINE_ROOT    its directory: daemon.json, data-root, exec-root, pidfile and log all live there
#   HATCHWAY_ENGINE_SOCKET  its API socket (default: $HATCHWAY_ENGINE_ROOT/docker.sock)
# It starts a containerd of its own under its exec-root (or, if a system containerd runs, uses namespaces of its
# own there). Stop it with its pidfile:
#   kill "$(cat "$HATCHWAY_ENGINE_ROOT/dockerd.pid")"
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive
private_root=${HATCHWAY_ENGINE_ROOT:-}
if [ -n "$private_root" ]; then
  mkdir -p "$private_root"
  private_root=$(cd "$private_root" && pwd)
  socket=${HATCHWAY_ENGINE_SOCKET:-$private_root/docker.sock}
  state_dir=$private_root
  config=$private_root/daemon.json
  log_file=$private_root/dockerd.log
  pidfile=$private_root/dockerd.pid
  export DOCKER_HOST=unix://$socket
  where=" on $socket"
else
  state_dir=/var/lib/hatchway-engine
  config=$state_dir/daemon.json
  log_file=/var/log/hatchway-dockerd.log
  pidfile=/var/run/docker.pid  # dockerd's default
  where=""
fi

apt_install() {
  apt-get update -qq
  apt-get install -y -qq "$@" >/dev/null
}

command -v runsc >/dev/null 2>&1 || { echo "installing Debian's runsc (gVisor) ..."; apt_install runsc; }
runsc_path=$(command -v runsc)

has_runsc() { docker info --format '{{json .Runtimes}}' 2>/dev/null | grep -q '"runsc"'; }

# Merge the JSON object $2 into the daemon.json $1 (created if needed), keeping everything else in it;
# object values are merged one level down (so "runtimes" keeps the runtimes already there).
merge_config() {
  python3 - "$1" "$2" <<'PY'
import json, os, sys
path, changes = sys.argv[1], json.loads(sys.argv[2])
config = {}
if os.path.exists(path):
    with open(path) as f:
        config = json.load(f)
for key, value in changes.items():
    if isinstance(value, dict):
        config.setdefault(key, {}).update(value)
    else:
        config[key] = value
os.makedirs(os.path.dirname(path), exist_ok=True)
with open(path + ".tmp", "w") as f:
    json.dump(config, f, indent=2)
os.replace(path + ".tmp", path)
PY
}

register_runsc() {
  merge_config "$1" "{\"runtimes\": {\"runsc\": {\"path\": \"$runsc_path\", \"runtimeArgs\": [\"--network=none\"]}}}"
}

# The pid of the daemon this script is about: its pidfile's if that process lives, else the only dockerd.
daemon_pid() {
  local pid
  if [ -f "$pidfile" ] && pid=$(cat "$pidfile") && [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    echo "$pid"
  elif [ -z "$private_root" ] && [ "$(pidof dockerd | wc -w)" = 1 ]; then
    pidof dockerd
  fi
}

if docker info >/dev/null 2>&1; then
  pid=$(daemon_pid)
  if ! has_runsc; then
    running_config=$config
    [ -z "$private_root" ] && running_config=/etc/docker/daemon.json
    if [ -n "$pid" ]; then
      from_cmdline=$(tr '\0' '\n' < "/proc/$pid/cmdline" | awk 'f{print;exit} /^--config-file$/{f=1} /^--config-file=/{sub(/^--config-file=/,"");print;exit}')
      [ -n "$from_cmdline" ] && running_config=$from_cmdline
    fi
    echo "registering runsc with the running Docker engine$where ($running_config) ..."
    register_runsc "$running_config"
    [ -n "$pid" ] && kill -HUP "$pid"
    for _ in $(seq 1 20); do has_runsc && break; sleep 0.5; done
    has_runsc || echo "warning: the engine did not pick up runsc; gVisor jobs will be refused" >&2
  fi
  if [ "$(docker info --format '{{.LiveRestoreEnabled}}' 2>/dev/null)" != true ]; then
    echo "warning: the running Docker engine$where has no live-restore: restarting it stops every running" \
      "job's container, and those jobs fail. To keep them running across a restart, add" \
      "\"live-restore\": true to its daemon.json and send it SIGHUP (it reloads that without a restart)." >&2
  fi
  exit 0
fi

command -v dockerd >/dev/null 2>&1 || { echo "installing Debian's docker.io ..."; apt_install docker.io; }

settings='{"bridge": "none", "iptables": false, "ip6tables": false, "live-restore": true}'
if [ -n "$private_root" ]; then
  mkdir -p "$private_root/data" "$private_root/exec"
  settings=$(python3 -c 'import json, sys; s = json.loads(sys.argv[1]); r = sys.argv[2]
s.update({"hosts": ["unix://" + sys.argv[3]], "data-root": r + "/data", "exec-root": r + "/exec",
          "pidfile": r + "/dockerd.pid", "containerd-namespace": "hatchway-private",
          "containerd-plugins-namespace": "hatchway-private-plugins"})
print(json.dumps(s))' "$settings" "$private_root" "$socket")
fi
mkdir -p "$state_dir"
merge_config "$config" "$settings"
register_runsc "$config"

echo "starting dockerd$where (no default bridge, no iptables, live-restore) ..."
nohup dockerd --config-file "$config" >>"$log_file" 2>&1 </dev/null &

for _ in $(seq 1 60); do
  if docker info >/dev/null 2>&1; then
    echo "Docker engine is up$where"
    exit 0
  fi
  sleep 0.5
done
echo "dockerd did not answer within 30 s; see $log_file" >&2
tail -20 "$log_file" >&2 || true
exit 1
