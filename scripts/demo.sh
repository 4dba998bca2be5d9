#!/usr/bin/env bash
# The newcomer's command: runs entity-cdc end to end on the sample metamodel
# (connector.yaml). It starts a throwaway PostgreSQL (wal_level=logical) and a
# Kafka-protocol broker (tansu) on loopback, creates the story's tables, runs
# `entity-cdc setup --apply` and `entity-cdc check`, starts `entity-cdc run`, plays the
# story (order 456 created for tenant 123 by user@example.com; product 42's price changed
# from 120.00 to 150.00; an order deleted), and prints the events as a consumer reads them
# back from Kafka. Everything it started or wrote is removed when it exits.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

scripts/install-deps.sh
scripts/install-broker.sh
echo "== building entity-cdc" >&2
cargo build --locked --quiet --bin entity-cdc
# Where cargo puts the build: target/ unless CARGO_TARGET_DIR says otherwise.
bin="${CARGO_TARGET_DIR:-$root/target}/debug/entity-cdc"
tansu=$(command -v tansu || echo "$HOME/.cargo/bin/tansu")

pg_bin=$(pg_config --bindir 2>/dev/null || true)
if [ -z "$pg_bin" ] || [ ! -x "$pg_bin/postgres" ]; then
  pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
fi

work=$(mktemp -d /tmp/entity-cdc-demo.XXXXXX)
chmod 755 "$work"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  if [ -f "$work/data/postmaster.pid" ]; then
    as_pg "$pg_bin/pg_ctl" -D "$work/data" -m immediate stop >/dev/null 2>&1 || true
  fi
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

# PostgreSQL refuses to run as root: run it as the postgres user then.
as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

pg_port=$(free_port)
kafka_port=$(free_port)
[ "$(id -u)" = 0 ] && chown postgres "$work"

echo "== starting PostgreSQL on 127.0.0.1:$pg_port (wal_level=logical)" >&2
as_pg "$pg_bin/initdb" -D "$work/data" -U postgres -A trust -E UTF8 --locale=C --no-sync >/dev/null
as_pg "$pg_bin/pg_ctl" -D "$work/data" -l "$work/data/server.log" -w -o \
  "-p $pg_port -c listen_addresses=127.0.0.1 -c unix_socket_directories=$work/data -c wal_level=logical" \
  start >/dev/null

echo "== starting the Kafka-protocol broker (tansu) on 127.0.0.1:$kafka_port" >&2
"$tansu" broker --listener-url "tcp://127.0.0.1:$kafka_port" \
  --advertised-listener-url "tcp://127.0.0.1:$kafka_port" \
  --storage-engine memory://tansu/ >"$work/tansu.log" 2>&1 &
pids+=($!)

psql_app() { "$pg_bin/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$pg_port" -U postgres -d app "$@"; }
"$pg_bin/psql" -X -q -h 127.0.0.1 -p "$pg_port" -U postgres -d postgres -c "create database app" 

echo "== creating the story's tables" >&2
# The same tables (and the connector's role) as the docker deployment creates.
psql_app -f "$root/docker/init.sql"

export ENTITY_CDC_CONFIG="$root/connector.yaml"
export ENTITY_CDC_PGHOST=127.0.0.1 ENTITY_CDC_PGPORT=$pg_port ENTITY_CDC_PGDATABASE=app
export ENTITY_CDC_PGUSER=postgres ENTITY_CDC_PGPASSWORD=
export ENTITY_CDC_KAFKA=127.0.0.1:$kafka_port
telemetry_port=$(free_port)
export ENTITY_CDC_TELEMETRY_LISTEN=127.0.0.1:$telemetry_port

echo "== entity-cdc setup (what it would run)" >&2
"$bin" setup
echo "== entity-cdc setup --apply" >&2
"$bin" setup --apply
echo "== entity-cdc check" >&2
"$bin" check

echo "== entity-cdc run" >&2
"$bin" run 2>"$work/connector.log" &
connector=$!
pids+=($connector)
# The connector creates its topics and starts streaming; wait until the slot is active.
for _ in $(seq 1 100); do
  active=$(psql_app -A -t -c "select active from pg_replication_slots where slot_name = 'entity_cdc'")
  [ "$active" = t ] && break
  kill -0 "$connector" 2>/dev/null || { cat "$work/connector.log" >&2; exit 1; }
  sleep 0.2
done

echo "== playing the story" >&2
psql_app <<'SQL'
-- Order 456 is created for tenant 123 by user@example.com.
insert into orders (id, tenant_id, status, priority, total, updated_by)
  values (456, 123, 'NEW', 'HIGH', 99.90, 'user@example.com');
-- Product 42 costs 120.00, then 150.00.
insert into products (id, tenant_id, name, price) values (42, 123, 'Espresso machine', 120.00);
update products set price = 150.00, version = version + 1 where id = 42;
-- An order placed by mistake is deleted, with a transaction context saying who did it.
insert into orders (id, tenant_id, status, total, updated_by) values (457, 123, 'NEW', 5.00, 'user@example.com');
begin;
\o /dev/null
select pg_logical_emit_message(true, 'entity-cdc',
  '{"user": "support@example.com", "priority": "CRITICAL", "correlationId": "ticket-7"}');
\o
delete from orders where id = 457;
commit;
SQL

echo "== the events, as a consumer reads them back from Kafka" >&2
sleep 2
"$bin" consume --idle-secs 3

echo "== readiness and the event counters (telemetry.listen 127.0.0.1:$telemetry_port)" >&2
if command -v curl >/dev/null; then
  curl -s "http://127.0.0.1:$telemetry_port/readyz"; echo
  curl -s "http://127.0.0.1:$telemetry_port/metrics" | grep -E '^entity_cdc_events_acknowledged_total' || true
fi

echo "== stopping the connector (SIGTERM: drain, confirm, exit 0)" >&2
kill -TERM "$connector"
wait "$connector" && echo "connector exited 0" >&2
psql_app -c "select slot_name, confirmed_flush_lsn, pg_current_wal_lsn() from pg_replication_slots" >&2
