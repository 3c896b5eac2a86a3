#!/usr/bin/env bash
# Make sure a Redis server answers on 127.0.0.1:6399, for the tests that publish a queue-pull task's events on
# the real event bus (the queue-pull platform's Redis pub/sub) and read them with a real subscriber. Uses
# Debian's redis-server, installed if missing, run by us with our own settings: loopback only, no persistence,
# nothing kept between runs. A Redis that already answers there is used as it is. Idempotent.
set -euo pipefail

state_dir=/var/lib/hatchway-redis
log_file=/var/log/hatchway-redis.log
port=6399

answers() { redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null | grep -q PONG; }

if command -v redis-cli >/dev/null 2>&1 && answers; then
  exit 0
fi

if ! command -v redis-server >/dev/null 2>&1; then
  echo "installing Debian's redis-server ..."
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq redis-server >/dev/null || { apt-get update -qq && apt-get install -y -qq redis-server >/dev/null; }
fi

mkdir -p "$state_dir"
echo "starting redis-server on 127.0.0.1:$port ..."
# Not the package's configuration (its service, if it runs, is on 6379 and left alone): ours on the command line.
redis-server --bind 127.0.0.1 --port "$port" --daemonize yes --dir "$state_dir" \
  --pidfile "$state_dir/redis.pid" --logfile "$log_file" --save "" --appendonly no

for _ in $(seq 1 40); do
  if answers; then
    echo "redis is up on 127.0.0.1:$port"
    exit 0
  fi
  sleep 0.25
done
echo "redis-server did not answer within 10 s; see $log_file" >&2
tail -20 "$log_file" >&2 || true
exit 1
