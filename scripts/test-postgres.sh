#!/usr/bin/env bash
# Make sure a PostgreSQL server answers on 127.0.0.1:5439, for the tests of the PostgreSQL job store (a fleet of
# workers on one database: docs/fleet-plan.md). Uses Debian's postgresql, installed if missing, with a throwaway
# cluster of our own under /var/lib/hatchway-postgres: loopback only, trust authentication for the `hatchway`
# role, fsync off (test data is not worth a disk flush). The package's own cluster, if any, is left alone. A
# server that already answers there is used as it is. Idempotent. Prints nothing else on success; tests connect
# to postgresql://hatchway@127.0.0.1:5439/hatchway (HATCHWAY_TEST_POSTGRES_URL).
set -euo pipefail

state_dir=/var/lib/hatchway-postgres
data_dir=$state_dir/data
log_file=/var/log/hatchway-postgres.log
port=5439

bin_dir() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }
as_postgres() { runuser -u postgres -- "$@"; }
answers() { "$(bin_dir)/pg_isready" -q -h 127.0.0.1 -p "$port" -d hatchway -U hatchway 2>/dev/null; }

if [ -n "$(bin_dir)" ] && answers; then
  exit 0
fi

if [ -z "$(bin_dir)" ]; then
  echo "installing Debian's postgresql ..."
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq postgresql >/dev/null || { apt-get update -qq && apt-get install -y -qq postgresql >/dev/null; }
fi
bin=$(bin_dir)

mkdir -p "$state_dir"
chown postgres:postgres "$state_dir"
touch "$log_file" && chown postgres:postgres "$log_file"
if [ ! -s "$data_dir/PG_VERSION" ]; then
  echo "creating a PostgreSQL cluster in $data_dir ..."
  rm -rf "$data_dir"
  # The superuser is `hatchway`, so no role has to be created; trust, as only loopback is listened on.
  as_postgres "$bin/initdb" -D "$data_dir" -U hatchway --auth=trust --encoding=UTF8 --locale=C.UTF-8 >/dev/null
  cat >> "$data_dir/postgresql.conf" <<CONF
# hatchway's test cluster (scripts/test-postgres.sh)
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$state_dir'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
CONF
fi

echo "starting PostgreSQL on 127.0.0.1:$port ..."
# A server left from a killed run holds a stale postmaster.pid: pg_ctl start sees through that itself.
as_postgres "$bin/pg_ctl" -D "$data_dir" -l "$log_file" -w -t 30 start >/dev/null || {
  echo "PostgreSQL did not start; see $log_file" >&2
  tail -20 "$log_file" >&2 || true
  exit 1
}
if ! as_postgres "$bin/psql" -h 127.0.0.1 -p "$port" -U hatchway -d postgres -tAc \
  "SELECT 1 FROM pg_database WHERE datname = 'hatchway'" | grep -q 1; then
  as_postgres "$bin/createdb" -h 127.0.0.1 -p "$port" -U hatchway hatchway
fi
if answers; then
  echo "postgresql is up on 127.0.0.1:$port"
  exit 0
fi
echo "PostgreSQL started but does not answer on 127.0.0.1:$port; see $log_file" >&2
exit 1
