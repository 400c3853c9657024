#!/bin/bash
# devcluster.sh start|stop|status: the local svcbus instance of `make run`.
#
# start: creates (once) a PostgreSQL 15 cluster owned by the postgres OS
# user in a project-local directory, on a free non-default port, with svcbus
# preloaded; creates database svcbus with the extension; starts
# svcbus-gateway; then shows the bus working.  Re-running it is safe: what
# already exists or runs is reused.  stop: stops the gateway (by its PID
# file) and the cluster.  Both expect `make install` to have run.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PGBIN=$(pg_config --bindir)
GATEWAY_BIN=${SVCBUS_GATEWAY_BIN:-/usr/local/bin/svcbus-gateway}

as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

# The run directory: $ROOT/.run if the postgres user can reach it, else a
# directory under /var/tmp named after the checkout.
pick_dir() {
    if [ -n "${SVCBUS_RUN_DIR:-}" ]; then echo "$SVCBUS_RUN_DIR"; return; fi
    mkdir -p "$ROOT/.run"
    [ "$(id -u)" = 0 ] && chown postgres:postgres "$ROOT/.run"
    if as_pg test -w "$ROOT/.run" 2>/dev/null; then echo "$ROOT/.run"; return; fi
    echo "/var/tmp/svcbus-run-$(echo "$ROOT" | md5sum | cut -c1-8)"
}
DIR=$(pick_dir)
DATA=$DIR/data

free_port() {
    local p
    for p in $(seq "$1" $(( $1 + 200 ))); do
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
    done
    echo "no free port near $1" >&2; exit 1
}

pg_running() { as_pg "$PGBIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; }

gateway_pid() {
    local pid
    [ -f "$DIR/gateway.pid" ] || return 1
    pid=$(cat "$DIR/gateway.pid")
    local exe
    [ -n "$pid" ] && [ -d "/proc/$pid" ] || return 1
    exe=$(readlink "/proc/$pid/exe")
    # a binary replaced by make install shows as "<path> (deleted)"
    [ "${exe% (deleted)}" = "$(readlink -f "$GATEWAY_BIN")" ] && echo "$pid"
}

gateway_outdated() {
    local pid
    pid=$(gateway_pid) || return 1
    [[ "$(readlink "/proc/$pid/exe")" == *" (deleted)" ]]
}

start() {
    mkdir -p "$DIR"
    [ "$(id -u)" = 0 ] && chown postgres:postgres "$DIR"
    if [ ! -f "$DATA/PG_VERSION" ]; then
        local port; port=$(free_port 54329)
        as_pg "$PGBIN/initdb" -D "$DATA" -A trust -U postgres -E UTF8 --locale=C >/dev/null
        as_pg tee -a "$DATA/postgresql.conf" >/dev/null <<CONF

# added by svcbus make run
port = $port
listen_addresses = '127.0.0.1'
unix_socket_directories = '$DIR'
shared_preload_libraries = 'svcbus'
svcbus.database = 'svcbus'
max_worker_processes = 16
CONF
        echo "created cluster in $DATA (port $port)"
    fi
    PORT=$(sed -n 's/^port = //p' "$DATA/postgresql.conf" | tail -1)
    # A server started before the library was rebuilt runs the old code: restart it.
    local lib; lib="$(pg_config --pkglibdir)/svcbus.so"
    if pg_running && [ "$lib" -nt "$DATA/postmaster.pid" ]; then
        echo "svcbus.so is newer than the running server: restarting it"
        as_pg "$PGBIN/pg_ctl" -D "$DATA" -m fast -w -t 60 stop >/dev/null
    fi
    if ! pg_running; then
        as_pg "$PGBIN/pg_ctl" -D "$DATA" -l "$DIR/postgres.log" -w -t 60 start >/dev/null
    fi
    PSQL=(psql -X -q -h 127.0.0.1 -p "$PORT" -U postgres)
    if [ "$("${PSQL[@]}" -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'svcbus'")" != 1 ]; then
        "${PSQL[@]}" -d postgres -c "CREATE DATABASE svcbus"
    fi
    # 0.1 is unreleased: when its install script changed since this demo
    # cluster created the extension, create it again (demo data is dropped).
    local script sum
    script="$(pg_config --sharedir)/extension/svcbus--0.1.sql"
    sum=$(sha256sum "$script" | cut -d' ' -f1)
    if [ "$(cat "$DIR/extension.sha256" 2>/dev/null)" != "$sum" ] &&
       [ "$("${PSQL[@]}" -d svcbus -tAc "SELECT 1 FROM pg_extension WHERE extname = 'svcbus'")" = 1 ]; then
        echo "the svcbus 0.1 install script changed: creating the extension again in this demo cluster"
        "${PSQL[@]}" -d svcbus -c "SET client_min_messages = warning" -c "DROP EXTENSION IF EXISTS svcbus CASCADE"
    fi
    "${PSQL[@]}" -d svcbus -c "CREATE EXTENSION IF NOT EXISTS svcbus"
    echo "$sum" > "$DIR/extension.sha256"

    # The gateway logs in as svcbus_gw, which holds no rights of its own and
    # may only become the roles granted to it; WebSocket clients name one
    # of those in a token signed with the secret in $DIR/jwt.secret.
    "${PSQL[@]}" -d svcbus <<'SQL'
DO $$ BEGIN
  CREATE ROLE svcbus_gw LOGIN NOINHERIT;
EXCEPTION WHEN duplicate_object THEN NULL; END $$;
DO $$ BEGIN
  CREATE ROLE svcbus_demo NOLOGIN;
EXCEPTION WHEN duplicate_object THEN NULL; END $$;
GRANT svcbus_demo TO svcbus_gw;
SELECT svcbus.create_queue('demo') WHERE NOT EXISTS (SELECT 1 FROM svcbus.list_queues() WHERE name = 'demo');
SELECT svcbus.grant_queue('demo', 'svcbus_demo', 'send'), svcbus.grant_queue('demo', 'svcbus_demo', 'receive');
SQL
    if [ ! -s "$DIR/jwt.secret" ]; then
        (umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$DIR/jwt.secret")
        [ "$(id -u)" = 0 ] && chown postgres "$DIR/jwt.secret"
    fi
    if [ ! -f "$DIR/gateway.conf" ] || ! grep -q '^jwt_secret_file' "$DIR/gateway.conf"; then
        local gport
        gport=$(sed -n 's/^http_port = //p' "$DIR/gateway.conf" 2>/dev/null || true)
        [ -n "$gport" ] || gport=$(free_port 8181)
        cat > "$DIR/gateway.conf" <<CONF
# svcbus-gateway configuration written by make run (see adapters/svcbus-gateway.conf.example)
listen_address = 127.0.0.1
http_port = $gport
db_conninfo = 'host=127.0.0.1 port=$PORT dbname=svcbus user=svcbus_gw'
pool_size = 4
jwt_secret_file = $DIR/jwt.secret
CONF
        chmod 644 "$DIR/gateway.conf"
        # a running gateway reads a changed file on SIGHUP, but not its pool's login
        if pid=$(gateway_pid); then
            start-stop-daemon --stop --pidfile "$DIR/gateway.pid" --retry TERM/10/KILL/5 >/dev/null || true
        fi
    fi
    GPORT=$(sed -n 's/^http_port = //p' "$DIR/gateway.conf")
    if gateway_outdated; then
        echo "svcbus-gateway was rebuilt: restarting it"
        start-stop-daemon --stop --pidfile "$DIR/gateway.pid" --retry TERM/10/KILL/5 >/dev/null || true
    fi
    if ! gateway_pid >/dev/null; then
        start-stop-daemon --start --background --make-pidfile --pidfile "$DIR/gateway.pid" \
            --chuid postgres --output "$DIR/gateway.log" \
            --exec "$GATEWAY_BIN" -- -c "$DIR/gateway.conf"
    fi

    # Show the bus working.
    for _ in $(seq 1 100); do
        curl -sf "http://127.0.0.1:$GPORT/health" >/dev/null 2>&1 && break
        sleep 0.1
    done
    for _ in $(seq 1 100); do
        [ "$("${PSQL[@]}" -d svcbus -tAc "SELECT count(*) FROM svcbus.workers WHERE state <> 'running'")" = 0 ] && break
        sleep 0.1
    done
    echo
    echo "== svcbus $("${PSQL[@]}" -d svcbus -tAc 'SELECT svcbus.version()') is running"
    "${PSQL[@]}" -d svcbus -c "SELECT name, pid, state, detail, restarts FROM svcbus.workers"
    echo "== a message round trip through queue 'demo':"
    "${PSQL[@]}" -d svcbus <<'SQL'
SELECT svcbus.create_queue('demo') WHERE NOT EXISTS (SELECT 1 FROM svcbus.list_queues() WHERE name = 'demo');
SELECT svcbus.send('demo', jsonb_build_object('hello', 'world', 'at', now())) AS sent_id;
WITH m AS (SELECT id, body, deliveries FROM svcbus.receive('demo', 1, wait => 1))
SELECT m.id, m.body, m.deliveries, svcbus.ack('demo', m.id) AS acked FROM m;
SELECT name, visible, in_flight, sent_total, acked_total FROM svcbus.queue_stats;
SQL
    echo "== a lease with a fencing token (ends by itself in 5 s):"
    "${PSQL[@]}" -d svcbus <<'SQL'
SELECT svcbus.lock('demo-lock', ttl => 5, owner => 'make-run') AS fencing_token;
SELECT name, mode, owner, state, token, expires_at FROM svcbus.locks;
SQL
    echo "== the cache: a write inside a rolled-back transaction leaves nothing; a committed one is read back:"
    "${PSQL[@]}" -d svcbus <<'SQL'
BEGIN; SELECT svcbus.cache_set('demo:greeting', 'rolled back'); ROLLBACK;
SELECT svcbus.cache_get_text('demo:greeting') AS after_rollback;
SELECT svcbus.cache_set('demo:greeting', jsonb_build_object('hello', 'cache'), 60);
SELECT svcbus.cache_get_jsonb('demo:greeting') AS after_commit, svcbus.cache_incr('demo:visits') AS visits;
SELECT items, hits, misses, round(hit_ratio::numeric, 2) AS hit_ratio, overhead_per_item FROM svcbus.cache_stats;
SQL
    echo "== the event store: an append rolled back leaves nothing; a view over events follows the committed ones:"
    "${PSQL[@]}" -d svcbus <<'SQL'
SELECT svcbus.create_view('demo_sales', $q$SELECT data->>'region' AS region, count(*) AS orders,
                                             sum((data->>'amount')::numeric) AS total
                                        FROM svcbus.event_log WHERE type = 'placed' GROUP BY data->>'region'$q$)
 WHERE NOT EXISTS (SELECT 1 FROM svcbus.projections WHERE name = 'demo_sales');
BEGIN;
SELECT svcbus.append('order-demo', '[{"type": "placed", "data": {"region": "north", "amount": 1000}}]');
ROLLBACK;
SELECT version, positions FROM svcbus.append('order-demo', '[{"type": "placed", "data": {"region": "north", "amount": 10}},
                                                             {"type": "placed", "data": {"region": "south", "amount": 5}}]');
DO $$ BEGIN
    FOR i IN 1..100 LOOP
        EXIT WHEN (SELECT lag_events FROM svcbus.projections WHERE name = 'demo_sales') = 0;
        PERFORM pg_sleep(0.05);
    END LOOP;
END $$;
SELECT * FROM demo_sales ORDER BY region;
SELECT name, mode, state, position, lag_events FROM svcbus.projections;
SQL
    echo "== gateway health:"
    curl -s "http://127.0.0.1:$GPORT/health"; echo
    # A token for role svcbus_demo, valid 24 hours (HS256, standard library only).
    TOKEN=$(/usr/bin/python3 - "$DIR/jwt.secret" <<'PY'
import base64, hashlib, hmac, json, sys, time
key = open(sys.argv[1], "rb").read()
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
si = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()) + "." + \
     b64(json.dumps({"role": "svcbus_demo", "exp": int(time.time()) + 86400}).encode())
print(si + "." + b64(hmac.new(key, si.encode(), hashlib.sha256).digest()))
PY
)
    echo "== the same queue over WebSocket (svcbus.v1, as role svcbus_demo):"
    SVCBUS_ROOT=$ROOT /usr/bin/python3 - "$GPORT" "$TOKEN" <<'PY'
import json, sys
import os
sys.path.insert(0, os.path.join(os.environ["SVCBUS_ROOT"], "test", "gateway"))
from wsclient import Client
c = Client(int(sys.argv[1]), token=sys.argv[2])
for op, fields in (("send", {"queue": "demo", "body": {"hello": "websocket"}}),
                   ("subscribe", {"queue": "demo", "prefetch": 10})):
    print("  ->", json.dumps(dict(op=op, **fields)), "\n  <-", json.dumps(c.ok(op, **fields)))
m = c.push()
print("  <- push", json.dumps({k: m[k] for k in ("push", "sub", "queue", "msg_id", "body", "deliveries")}))
print("  ->", json.dumps({"op": "ack", "queue": "demo", "msg_ids": [m["msg_id"]]}),
      "\n  <-", json.dumps(c.ok("ack", queue="demo", msg_ids=[m["msg_id"]])))
c.close()
PY
    echo
    echo "Demo page: http://127.0.0.1:$GPORT/#token=$TOKEN&queue=demo"
    echo "WebSocket: ws://127.0.0.1:$GPORT/ws  (subprotocol svcbus.v1; token above, role svcbus_demo)"
    echo "Connect:   psql -h 127.0.0.1 -p $PORT -U postgres svcbus"
    echo "Health:    curl -s http://127.0.0.1:$GPORT/health"
    echo "Metrics:   curl -s http://127.0.0.1:$GPORT/metrics"
    echo "Logs:      $DIR/postgres.log  $DIR/gateway.log"
    echo "Stop:      make stop"
}

stop() {
    local pid
    if pid=$(gateway_pid); then
        start-stop-daemon --stop --pidfile "$DIR/gateway.pid" --retry TERM/10/KILL/5 >/dev/null || true
        rm -f "$DIR/gateway.pid"
        echo "gateway (PID $pid) stopped"
    fi
    if [ -f "$DATA/PG_VERSION" ] && pg_running; then
        as_pg "$PGBIN/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null
        echo "cluster in $DATA stopped"
    fi
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) pg_running && echo "cluster running in $DATA" || echo "cluster not running"
            gateway_pid >/dev/null && echo "gateway running" || echo "gateway not running" ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
