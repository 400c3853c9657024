"""End-to-end tests of the svcbus.v1 WebSocket endpoint, with a real client.

Each test drives the gateway through python3-websockets against a real
cluster and judges only what a client sees (replies, pushes, close codes)
and what the database holds.  The gateway logs in as svcbus_gw, a role with
no rights of its own that may become alice and bob; tokens name the role.
"""

import json
import os
import signal
import socket
import time
import urllib.request

import pytest
import websockets

from conftest import Gateway, parse_prometheus, wait_for
from wsclient import SECRET, SETUP_SQL, Client, make_token


@pytest.fixture(scope="module")
def env(cluster):
    cluster.execute(SETUP_SQL)
    for q in ("orders", "wsq", "dlq_src", "kill9", "stall", "credit_q", "share"):
        cluster.execute("SELECT svcbus.create_queue(%s, '{\"visibility_timeout\": 30}')", (q,))
        cluster.execute("SELECT svcbus.grant_queue(%s, 'alice', 'send')", (q,))
        cluster.execute("SELECT svcbus.grant_queue(%s, 'alice', 'receive')", (q,))
    cluster.execute("SELECT svcbus.create_topic('events')")
    cluster.execute("SELECT svcbus.subscribe('events', 'wsq', 'order.*')")
    cluster.execute("SELECT svcbus.grant_topic('events', 'alice', 'publish')")
    return cluster


def gw_config(cluster, **extra):
    cfg = {"db_conninfo": "'%s'" % cluster.dsn(user="svcbus_gw"),
           "jwt_secret": SECRET, "pool_size": "4"}
    cfg.update({k: str(v) for k, v in extra.items()})
    return cfg


@pytest.fixture(scope="module")
def gw(env):
    g = Gateway(env, gw_config(env)).start()
    yield g
    g.stop()


@pytest.fixture
def make_gw(env):
    started = []

    def make(**extra):
        g = Gateway(env, gw_config(env, **extra)).start()
        started.append(g)
        return g
    yield make
    for g in started:
        g.stop()


@pytest.fixture
def alice(gw):
    c = Client(gw.port, token=make_token("alice"))
    yield c
    c.close()


def drain(cluster, queue):
    cluster.execute("SELECT svcbus.purge_queue(%s)", (queue,))


def metrics(g):
    with urllib.request.urlopen(g.url("/metrics"), timeout=10) as r:
        return parse_prometheus(r.read().decode())


# ------------------------------------------------------------ handshake

def test_upgrade_needs_the_subprotocol(gw):
    """Without subprotocol svcbus.v1 the upgrade is refused."""
    with pytest.raises((websockets.InvalidHandshake, ConnectionError, OSError)):
        Client(gw.port, subprotocols=())


def test_upgrade_on_another_path_is_refused(gw):
    with pytest.raises((websockets.InvalidHandshake, ConnectionError, OSError)):
        Client(gw.port, path="/other")


def test_origin_allow_list(make_gw):
    """A browser origin must be the gateway's own or listed; others are refused."""
    g = make_gw(allowed_origins="http://app.example")
    Client(g.port, origin="http://app.example").close()
    Client(g.port, origin="http://127.0.0.1:%d" % g.port).close()   # same origin
    with pytest.raises((websockets.InvalidHandshake, ConnectionError, OSError)):
        Client(g.port, origin="http://evil.example")
    m = metrics(g)
    assert m[("svcbus_gateway_ws_connections_rejected_total", frozenset())] >= 1


def test_plain_get_of_ws_path_explains(gw):
    from conftest import http
    status, _, body = http(gw.url("/ws"))
    assert status == 400
    assert b"svcbus.v1" in body


# ------------------------------------------------------------ identity

def test_requests_before_auth_are_refused(gw):
    c = Client(gw.port)
    e = c.err("send", queue="orders", body=1)
    assert e["code"] == "28000" and e["message"] == "not authenticated"
    assert "auth" in e["hint"]
    c.close()


@pytest.mark.parametrize("token,message", [
    (make_token("alice", exp_in=-10), "token has expired"),
    (make_token("alice", secret="wrong-secret"), "token signature is invalid"),
    (make_token("alice", alg="none"), "token algorithm must be HS256"),
    ("not.a.token", None),
    (make_token("alice", exp_in=None), None),          # exp is required
])
def test_bad_tokens_are_refused_before_any_database_work(gw, env, token, message):
    before = env.execute("SELECT count(*) FROM pg_stat_activity WHERE usename = 'svcbus_gw'")
    c = Client(gw.port)
    e = c.err("auth", token=token)
    assert e["code"] == "28000", e
    if message:
        assert e["message"] == message
    assert token not in json.dumps(e)                  # never echoed
    e = c.err("send", queue="orders", body=1)
    assert e["code"] == "28000"
    c.close()
    after = env.execute("SELECT count(*) FROM pg_stat_activity WHERE usename = 'svcbus_gw'")
    assert before == after


def test_bearer_token_in_the_handshake(gw):
    c = Client(gw.port, headers={"Authorization": "Bearer " + make_token("alice")})
    assert "msg_id" in c.ok("send", queue="orders", body={"via": "header"})
    c.close()


def test_bad_bearer_token_closes_with_1008(gw):
    c = Client(gw.port, headers={"Authorization": "Bearer " + make_token("alice", secret="x")})
    m = c.recv()
    assert m["error"]["code"] == "28000"
    assert c.wait_closed()[0] == 1008


def test_role_not_granted_to_the_gateway_is_refused(gw):
    c = Client(gw.port, token=make_token("mallory"))
    e = c.err("send", queue="orders", body=1)
    assert e["code"] == "42501"
    assert e["message"] == 'permission denied to set role "mallory"'
    c.close()


def test_queue_grants_apply_exactly_as_in_sql(gw, env):
    """bob has no right on the queue: refused with 42501 over WebSocket, as in SQL."""
    bob = Client(gw.port, token=make_token("bob"))
    e = bob.err("send", queue="orders", body=1)
    assert e["code"] == "42501"
    assert e["message"] == 'permission denied for queue "orders"'
    assert e["detail"] == "The send right is needed."
    e = bob.err("subscribe", queue="orders", prefetch=1)
    assert e["code"] == "42501" and e["detail"] == "The receive right is needed."
    env.execute("SELECT svcbus.grant_queue('orders', 'bob', 'send')")
    try:
        assert "msg_id" in bob.ok("send", queue="orders", body=1)
    finally:
        env.execute("SELECT svcbus.revoke_queue('orders', 'bob', 'send')")
    assert bob.err("send", queue="orders", body=1)["code"] == "42501"
    bob.close()


def test_requests_run_as_the_token_role(gw, env):
    """The statement sees current_user = the token's role, not the login role."""
    env.execute("CREATE OR REPLACE FUNCTION public.whoami() RETURNS jsonb LANGUAGE sql "
                "AS $$ SELECT jsonb_build_object('user', current_user) $$")
    c = Client(gw.port, token=make_token("alice"))
    c.ok("send", queue="orders", body=1)
    rows = env.execute("SELECT count(*) FROM pg_stat_activity WHERE usename = 'svcbus_gw' "
                       "AND state = 'idle'")
    assert rows[0][0] >= 1
    c.close()


def test_token_expiry_closes_with_4001(gw):
    c = Client(gw.port, token=make_token("alice", exp_in=2))
    assert c.wait_closed(timeout=10)[0] == 4001


def test_no_auth_in_time_closes_with_4002(make_gw):
    g = make_gw(ws_auth_timeout_ms=300)
    c = Client(g.port)
    assert c.wait_closed(timeout=10)[0] == 4002


def test_reauth_with_another_role_is_refused(alice):
    e = alice.err("auth", token=make_token("bob"))
    assert e == {"code": "28000", "message": "a connection cannot change its role"}
    assert alice.ok("auth", token=make_token("alice", exp_in=7200))["role"] == "alice"


# ------------------------------------------------------------ queues and topics

def test_send_and_send_batch_land_in_the_queue(alice, env):
    drain(env, "orders")
    one = alice.ok("send", queue="orders", body={"n": 1}, headers={"h": "x"}, priority=3,
                   group="g1", dedup_id="d-1")
    batch = alice.ok("send_batch", queue="orders", bodies=[{"n": 2}, {"n": 3}])
    assert isinstance(one["msg_id"], int)
    assert len(batch["msg_ids"]) == 2 and batch["msg_ids"][0] < batch["msg_ids"][1]
    rows = env.execute("SELECT id, body FROM svcbus.receive('orders', 10) ORDER BY id")
    assert [r[1] for r in rows] == [{"n": 1}, {"n": 2}, {"n": 3}]
    env.execute("SELECT svcbus.ack('orders', %s)", ([r[0] for r in rows],))


def test_publish_routes_by_key(alice, env):
    drain(env, "wsq")
    assert alice.ok("publish", topic="events", routing_key="order.created", body={"o": 1}) == {"queues": 1}
    assert alice.ok("publish", topic="events", routing_key="user.created", body={"o": 2}) == {"queues": 0}
    drain(env, "wsq")


def test_subscribe_delivers_pushes_and_ack_settles(alice, env):
    drain(env, "wsq")
    sub = alice.ok("subscribe", queue="wsq", prefetch=10)
    assert sub["sub"].startswith("s") and sub["credit"] == 10
    ids = [alice.ok("send", queue="wsq", body={"i": i})["msg_id"] for i in range(3)]
    got = [alice.push() for _ in range(3)]
    assert sorted(m["msg_id"] for m in got) == ids
    assert all(m["sub"] == sub["sub"] and m["queue"] == "wsq" and m["deliveries"] == 1 for m in got)
    assert alice.ok("ack", queue="wsq", msg_ids=ids) == {"acked": 3}
    assert env.execute("SELECT in_flight, visible FROM svcbus.queue_info() WHERE name = 'wsq'") == [(0, 0)]
    assert alice.ok("unsubscribe", sub=sub["sub"]) == {"unsubscribed": True, "returned": 0}


def test_nack_redelivers_and_extend_moves_the_lease(alice, env):
    drain(env, "wsq")
    sub = alice.ok("subscribe", queue="wsq", prefetch=1)["sub"]
    mid = alice.ok("send", queue="wsq", body="x")["msg_id"]
    assert alice.push()["msg_id"] == mid
    assert "visible_until" in alice.ok("extend", queue="wsq", msg_id=mid, visibility_timeout=60)
    assert alice.ok("nack", queue="wsq", msg_id=mid, delay=0) == {"nacked": True}
    again = alice.push()
    assert again["msg_id"] == mid and again["deliveries"] == 2
    alice.ok("ack", queue="wsq", msg_ids=mid)
    alice.ok("unsubscribe", sub=sub)


def test_credit_bounds_what_a_client_holds(alice, env):
    drain(env, "credit_q")
    sub = alice.ok("subscribe", queue="credit_q", prefetch=2)["sub"]
    alice.ok("send_batch", queue="credit_q", bodies=[1, 2, 3, 4, 5])
    first = [alice.push(), alice.push()]
    with pytest.raises(AssertionError):
        alice.push(timeout=1.5)                      # window full: nothing more
    alice.ok("ack", queue="credit_q", msg_ids=[first[0]["msg_id"]])
    third = alice.push()                             # one slot freed, one more
    with pytest.raises(AssertionError):
        alice.push(timeout=1)
    assert alice.ok("credit", sub=sub, credit=2)["credit"] == 2
    more = [alice.push(), alice.push()]
    ids = [m["msg_id"] for m in first[1:] + [third] + more]
    assert len(set(ids)) == 4
    alice.ok("ack", queue="credit_q", msg_ids=ids)
    alice.ok("unsubscribe", sub=sub)


def test_disconnect_returns_held_messages(gw, env):
    drain(env, "share")
    a = Client(gw.port, token=make_token("alice"))
    a.ok("subscribe", queue="share", prefetch=5)
    mid = a.ok("send", queue="share", body="keep me")["msg_id"]
    assert a.push()["msg_id"] == mid
    a.close()                                        # not acked
    b = Client(gw.port, token=make_token("alice"))
    b.ok("subscribe", queue="share", prefetch=5)
    m = b.push(timeout=10)
    assert m["msg_id"] == mid and m["deliveries"] >= 2      # each lease counts
    b.ok("ack", queue="share", msg_ids=mid)
    b.close()


def test_subscribers_of_one_queue_share_one_long_poll(gw, env):
    """16 subscribers of one queue under one role hold one database connection."""
    drain(env, "share")
    clients = [Client(gw.port, token=make_token("alice")) for _ in range(16)]
    for c in clients:
        c.ok("subscribe", queue="share", prefetch=2)
    time.sleep(0.5)
    m = metrics(gw)
    assert m[("svcbus_gateway_ws_long_polls", frozenset())] == 1
    waiting = env.execute("SELECT count(*) FROM pg_stat_activity WHERE usename = 'svcbus_gw' "
                          "AND query LIKE '%svcbus.receive%' AND state = 'active'")[0][0]
    assert waiting == 1
    ids = env.execute("SELECT svcbus.send_batch('share', ARRAY(SELECT jsonb_build_object('i', g) "
                      "FROM generate_series(1, 32) g))")
    got = []
    for c in clients:
        got += [c.push()["msg_id"], c.push()["msg_id"]]
    assert sorted(got) == sorted(r[0] for r in ids)   # each delivered once, spread over all
    for c in clients:
        c.close()
    drain(env, "share")


def test_stalled_consumer_is_closed_and_loses_nothing(make_gw, env):
    drain(env, "stall")
    g = make_gw(ws_stall_timeout_ms=800)
    c = Client(g.port, token=make_token("alice"))
    c.ok("subscribe", queue="stall", prefetch=1)
    mid = c.ok("send", queue="stall", body="held")["msg_id"]
    assert c.push()["msg_id"] == mid
    code, reason = c.wait_closed(timeout=10)
    assert code == 4003 and "stalled" in reason
    d = Client(g.port, token=make_token("alice"))
    d.ok("subscribe", queue="stall", prefetch=1)
    assert d.push(timeout=10)["msg_id"] == mid
    d.ok("ack", queue="stall", msg_ids=mid)
    d.close()


def test_subscription_errors(alice):
    assert alice.err("subscribe", queue="nope", prefetch=1)["code"] == "42704"
    sub = alice.ok("subscribe", queue="orders", prefetch=1)["sub"]
    e = alice.err("subscribe", queue="orders", prefetch=1)
    assert e["code"] == "55000" and e["message"] == "already subscribed to this queue"
    assert alice.err("subscribe", queue="wsq", prefetch=0)["code"] == "22023"
    assert alice.err("unsubscribe", sub="s999") == {"code": "55000", "message": "no such subscription"}
    assert alice.err("credit", sub="s999", credit=1)["code"] == "55000"
    assert alice.err("credit", sub=sub, credit=100000)["code"] == "53400"
    alice.ok("unsubscribe", sub=sub)


def test_settle_errors_come_from_the_database(alice):
    e = alice.err("ack", queue="orders", msg_ids=[987654321])
    assert e["code"] == "SB001"
    assert alice.err("nack", queue="orders", msg_id=987654321)["code"] == "SB001"


def test_kill9_of_the_gateway_loses_nothing(env):
    """kill -9 mid-stream: every message sent is received, acked ones never again."""
    drain(env, "kill9")
    env.execute("SELECT svcbus.drop_queue('kill9')")
    env.execute("SELECT svcbus.create_queue('kill9', '{\"visibility_timeout\": 2}')")
    env.execute("SELECT svcbus.grant_queue('kill9', 'alice', 'receive')")
    sent = [r[0] for r in env.execute(
        "SELECT svcbus.send_batch('kill9', ARRAY(SELECT to_jsonb(g) FROM generate_series(1, 200) g))")]
    g = Gateway(env, gw_config(env)).start()
    c = Client(g.port, token=make_token("alice"))
    c.ok("subscribe", queue="kill9", prefetch=250)
    acked, seen = set(), set()
    while len(acked) < 80:
        m = c.push()
        seen.add(m["msg_id"])
        if len(seen) % 2 == 0:                      # ack half of what arrives
            c.ok("ack", queue="kill9", msg_ids=[m["msg_id"]])
            acked.add(m["msg_id"])
    os.kill(g.pid, signal.SIGKILL)
    g.proc.wait()
    g2 = Gateway(env, gw_config(env)).start()
    try:
        c2 = Client(g2.port, token=make_token("alice"))
        c2.ok("subscribe", queue="kill9", prefetch=100)
        rest = set()
        deadline = time.time() + 30
        while len(acked | rest) < len(sent) and time.time() < deadline:
            m = c2.push(timeout=10)
            assert m["msg_id"] not in acked, "an acked message came back"
            rest.add(m["msg_id"])
            c2.ok("ack", queue="kill9", msg_ids=[m["msg_id"]])
        assert acked | rest == set(sent)
        c2.close()
    finally:
        g2.stop()


# ------------------------------------------------------------ locks, cache, elections

def test_lock_lifecycle_with_fencing_tokens(gw, alice):
    t = alice.ok("lock", name="ws-l1", ttl=30)
    assert isinstance(t["token"], int) and t["owner"].startswith("ws:")
    bob = Client(gw.port, token=make_token("bob"))
    assert bob.ok("try_lock", name="ws-l1", ttl=30)["token"] is None
    assert alice.ok("fence", name="ws-l1", token=t["token"]) == {"valid": True}
    assert "expires_at" in alice.ok("renew", name="ws-l1", token=t["token"], ttl=30)
    assert alice.ok("unlock", name="ws-l1", token=t["token"]) == {"released": True}
    t2 = bob.ok("try_lock", name="ws-l1", ttl=30)["token"]
    assert t2 > t["token"]
    e = alice.err("fence", name="ws-l1", token=t["token"])
    assert e["code"] == "SB101"
    assert alice.err("renew", name="ws-l1", token=t["token"], ttl=5)["code"] == "SB102"
    bob.close()


def test_lock_waits_and_is_released_at_disconnect(gw):
    a = Client(gw.port, token=make_token("alice"))
    b = Client(gw.port, token=make_token("bob"))
    tok = a.ok("lock", name="ws-l2", ttl=60)["token"]
    rid = b.send_request("lock", name="ws-l2", ttl=60, wait=10)
    time.sleep(0.3)
    a.close()                                        # default-owner locks end with the connection
    r = b.reply(rid, timeout=15)
    assert r["result"]["token"] > tok
    b.close()


def test_lock_with_explicit_owner_survives_the_connection(gw):
    a = Client(gw.port, token=make_token("alice"))
    tok = a.ok("lock", name="ws-l3", ttl=60, owner="worker-7")["token"]
    a.close()
    b = Client(gw.port, token=make_token("alice"))
    assert b.ok("try_lock", name="ws-l3", ttl=5)["token"] is None
    assert b.ok("unlock", name="ws-l3", token=tok, owner="worker-7") == {"released": True}
    b.close()


def test_cache_operations(alice, env):
    assert alice.ok("cache_set", key="ws:k1", value={"a": [1, 2]}, ttl=60) == {"stored": True}
    assert alice.ok("cache_get", key="ws:k1") == {"value": {"a": [1, 2]}}
    assert alice.ok("cache_set", key="ws:k2", value="raw text", format="text") == {"stored": True}
    assert alice.ok("cache_get", key="ws:k2", format="text") == {"value": "raw text"}
    assert env.execute("SELECT svcbus.cache_get_text('ws:k2')") == [("raw text",)]
    assert alice.ok("cache_incr", key="ws:n", delta=5) == {"value": 5}
    assert alice.ok("cache_incr", key="ws:n") == {"value": 6}
    assert alice.ok("cache_delete", key="ws:k1") == {"deleted": True}
    assert alice.ok("cache_get", key="ws:k1") == {"value": None}
    assert alice.err("cache_set", key="k", value=5, format="text")["code"] == "22023"
    assert alice.err("cache_get", key="x" * 300)["code"] == "54000"     # the database's key limit


def test_elections_and_leader_watch(gw):
    a = Client(gw.port, token=make_token("alice"))
    w = Client(gw.port, token=make_token("bob"))
    assert w.ok("watch_leader", election="ws-e1")["candidate"] is None
    assert w.push("leader")["candidate"] is None
    term = a.ok("campaign", election="ws-e1", candidate="node-a", ttl=30)["term"]
    p = w.push("leader")
    assert p["candidate"] == "node-a" and p["term"] == term
    assert a.ok("campaign", election="ws-e1", candidate="node-b", ttl=30)["term"] is None
    assert a.ok("resign", election="ws-e1", candidate="node-a", term=term) == {"resigned": True}
    assert w.push("leader")["candidate"] is None
    e = w.err("watch_leader", election="ws-e1")
    assert e["code"] == "55000"
    assert w.ok("unwatch_leader", election="ws-e1") == {"unwatched": True}
    assert w.err("unwatch_leader", election="ws-e1")["code"] == "55000"
    a.close()
    w.close()


def test_leader_watch_sees_silent_expiry(gw):
    a = Client(gw.port, token=make_token("alice"))
    w = Client(gw.port, token=make_token("alice"))
    w.ok("watch_leader", election="ws-e2")
    w.push("leader")
    a.ok("campaign", election="ws-e2", candidate="short", ttl=1)
    assert w.push("leader")["candidate"] == "short"
    assert w.push("leader", timeout=10)["candidate"] is None      # lease ran out, no NOTIFY
    a.close()
    w.close()


# ------------------------------------------------------------ bad input

@pytest.mark.parametrize("raw,code,message", [
    ("{not json", "08P01", "malformed JSON at character"),
    ("[1,2]", "08P01", "a request must be a JSON object"),
    ('{"op":"ping"}', "08P01", 'a request needs an "id"'),
    ('{"id":{"x":1},"op":"ping"}', "08P01", '"id" must be a string'),
    ('{"id":1}', "08P01", 'a request needs an "op" string'),
    ('{"id":1,"op":"frobnicate"}', "42883", 'unknown operation "frobnicate"'),
    ('{"id":1,"op":"send","op":"send"}', "08P01", "malformed JSON"),
    ('{"id":1,"op":"send","body":1}', "22023", 'missing field "queue"'),
    ('{"id":1,"op":"send","queue":5,"body":1}', "22023", '"queue" must be a string'),
    ('{"id":1,"op":"send","queue":"","body":1}', "22023", "non-empty string"),
    ('{"id":1,"op":"send","queue":"a\\u0000b","body":1}', "22023", "without NUL"),
    ('{"id":1,"op":"send","queue":"orders","body":1,"priority":"high"}', "22023", '"priority" must be an integer'),
    ('{"id":1,"op":"send","queue":"orders","body":1,"headers":[1]}', "22023", '"headers" must be a JSON object'),
    ('{"id":1,"op":"send_batch","queue":"orders","bodies":[]}', "22023", '"bodies" must be a non-empty JSON array'),
    ('{"id":1,"op":"ack","queue":"orders","msg_ids":["a"]}', "22023", "array of integers"),
    ('{"id":1,"op":"lock","name":"x"}', "22023", 'missing field "ttl"'),
])
def test_malformed_requests_get_documented_errors(alice, raw, code, message):
    alice.send_raw(raw)
    m = alice.recv()
    assert m["error"]["code"] == code, m
    assert message in m["error"]["message"], m
    if '"id":1' in raw and code != "08P01":
        assert m["id"] == 1
    assert alice.ok("ping") == {"pong": True}                   # connection unaffected


def test_long_names_are_cut_in_messages(alice):
    e = alice.err("x" * 5000)
    assert e["code"] == "42883" and len(e["message"]) < 100
    e = alice.err("send", queue="q" * 2000, body=1)
    assert e == {"code": "54000", "message": '"queue" is longer than 1024 bytes'}


def test_database_errors_do_not_leak_internals(alice):
    e = alice.err("send", queue="orders", body=1, priority=99)
    assert e["code"] == "22023"
    text = json.dumps(e)
    for leak in ("svcbus_internal", "nextval", "SELECT", "host=", "json_build_object"):
        assert leak not in text


def test_oversize_message_closes_with_1009(make_gw):
    g = make_gw(ws_max_frame_bytes=4096)
    c = Client(g.port, token=make_token("alice"))
    c.send_raw(json.dumps({"id": 1, "op": "send", "queue": "orders", "body": "x" * 5000}))
    code, reason = c.wait_closed()
    assert code == 1009 and "4096" in reason
    ok = Client(g.port, token=make_token("alice"))           # others unaffected
    assert ok.ok("ping") == {"pong": True}
    ok.close()


def test_binary_frame_closes_with_1003(alice):
    alice.send_raw(b"\x00\x01binary")
    assert alice.wait_closed()[0] == 1003


def test_invalid_utf8_closes_the_connection(gw):
    """lws validates text frames: invalid UTF-8 closes with 1007."""
    s = socket.create_connection(("127.0.0.1", gw.port))
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    s.sendall(("GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
               "Sec-WebSocket-Protocol: svcbus.v1\r\n\r\n" % key).encode())
    resp = s.recv(4096)
    assert b"101" in resp.split(b"\r\n")[0]
    payload = b"\xff\xfe"
    mask = b"\x01\x02\x03\x04"
    s.sendall(bytes([0x81, 0x80 | len(payload)]) + mask +
              bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
    s.settimeout(5)
    data = s.recv(4096)
    assert data[0] == 0x88                                   # a close frame
    assert int.from_bytes(data[2:4], "big") == 1007
    s.close()


def test_flood_is_refused_then_closed_and_others_unaffected(make_gw):
    g = make_gw(ws_rate_limit=20)
    c = Client(g.port, token=make_token("alice"))
    other = Client(g.port, token=make_token("alice"))
    for i in range(300):
        c.send_raw(json.dumps({"id": i, "op": "ping"}))
    codes = []
    try:
        while True:
            m = c.recv(timeout=5)
            if "error" in m:
                codes.append(m["error"]["code"])
    except websockets.ConnectionClosed as e:
        assert e.code == 1008
    assert "53400" in codes
    assert other.ok("ping") == {"pong": True}
    m = metrics(g)
    assert m[("svcbus_gateway_ws_errors_total", frozenset({("code", "53400")}))] >= 1
    other.close()


def test_too_many_connections_are_refused(make_gw):
    g = make_gw(ws_max_connections=2)
    a, b = Client(g.port), Client(g.port)
    with pytest.raises((websockets.InvalidHandshake, ConnectionError, OSError)):
        Client(g.port)
    a.close()
    b.close()


def test_in_flight_limit_applies_back_pressure(make_gw, env):
    """Requests beyond ws_max_inflight wait (reading pauses); none is lost."""
    g = make_gw(ws_max_inflight=2, ws_rate_limit=0)
    c = Client(g.port, token=make_token("alice"))
    b = Client(g.port, token=make_token("bob"))
    tok = c.ok("lock", name="ws-bp", ttl=60)["token"]
    r1 = b.send_request("lock", name="ws-bp", ttl=60, wait=2, owner="w1")
    r2 = b.send_request("lock", name="ws-bp", ttl=60, wait=2, owner="w2")
    r3 = b.send_request("ping")
    assert b.reply(r1)["result"]["token"] is None
    assert b.reply(r2)["result"]["token"] is None
    assert b.reply(r3)["result"] == {"pong": True}
    c.ok("unlock", name="ws-bp", token=tok)
    c.close()
    b.close()


# ------------------------------------------------------------ operations side

def test_metrics_count_connections_frames_operations_and_errors(gw):
    c = Client(gw.port, token=make_token("alice"))
    c.ok("ping")
    c.err("frobnicate")
    m = metrics(gw)
    assert m[("svcbus_gateway_ws_connections", frozenset())] >= 1
    assert m[("svcbus_gateway_ws_frames_total", frozenset({("direction", "in")}))] >= 3
    assert m[("svcbus_gateway_ws_operations_total", frozenset({("op", "ping")}))] >= 1
    assert m[("svcbus_gateway_ws_operations_total", frozenset({("op", "unknown")}))] >= 1
    assert m[("svcbus_gateway_ws_errors_total", frozenset({("code", "42883")}))] >= 1
    c.close()


def test_sighup_reloads_limits_and_secrets_without_dropping_connections(make_gw):
    g = make_gw()
    c = Client(g.port, token=make_token("alice"))
    g.config["jwt_secret"] = "rotated-secret-value"
    g.config["ws_max_frame_bytes"] = "2048"
    g.write_config()
    os.kill(g.pid, signal.SIGHUP)
    wait_for(lambda: "event=config_reload status=applied" in g.log_text(), what="reload")
    assert c.ok("ping") == {"pong": True}                    # still connected
    e = Client(g.port).err("auth", token=make_token("alice"))
    assert e["code"] == "28000"                               # old secret no longer valid
    Client(g.port, token=make_token("alice", secret="rotated-secret-value")).close()
    c.send_raw(json.dumps({"id": 9, "op": "ping", "pad": "x" * 3000}))
    assert c.wait_closed()[0] == 1009                        # new limit in force
    g.config["pool_size"] = "8"
    g.config["ws_max_frame_bytes"] = "bogus"
    g.write_config()
    os.kill(g.pid, signal.SIGHUP)
    wait_for(lambda: "status=rejected" in g.log_text(), what="rejected reload")


def test_sigterm_closes_clients_with_1001(make_gw):
    g = make_gw()
    c = Client(g.port, token=make_token("alice"))
    g.proc.send_signal(signal.SIGTERM)
    assert c.wait_closed()[0] == 1001
    assert g.proc.wait(10) == 0


# ------------------------------------------------- database faults


def own_backends(cluster, g):
    """The backends of gateway g alone: those whose client socket g holds."""
    def ports():
        inodes = set()
        for fd in os.listdir("/proc/%d/fd" % g.pid):
            try:
                link = os.readlink("/proc/%d/fd/%s" % (g.pid, fd))
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
        out = set()
        for line in open("/proc/%d/net/tcp" % g.pid).read().splitlines()[1:]:
            f = line.split()
            if f[3] == "01" and f[9] in inodes:      # ESTABLISHED, held by g
                out.add(int(f[1].split(":")[1], 16))
        return out
    def find():
        mine = ports()
        rows = cluster.execute("SELECT pid, client_port FROM pg_stat_activity "
                               "WHERE usename = 'svcbus_gw'")
        return [pid for pid, port in rows if port in mine]
    pids = wait_for(find, what="the gateway's backend")
    assert len(pids) == 1, pids
    return pids


def test_database_faults_reach_clients_as_documented_codes(make_gw, env):
    """A frozen backend: the running request ends 57014 at its deadline, one
    more waits, the next is refused 53300; the gateway recovers after."""
    g = make_gw(pool_size=1, query_timeout_ms=1000, max_pending_queries=1)
    c = Client(g.port, token=make_token("alice"))
    assert "msg_id" in c.ok("send", queue="orders", body="warm")
    pids = own_backends(env, g)
    os.kill(pids[0], signal.SIGSTOP)
    try:
        running = c.send_request("send", queue="orders", body="frozen")
        time.sleep(0.2)
        queued = c.send_request("send", queue="orders", body="queued")
        time.sleep(0.2)
        refused = c.reply(c.send_request("send", queue="orders", body="refused"))
        assert refused["error"]["code"] == "53300", refused
        r = c.reply(running, timeout=15)
        assert r["error"] == {"code": "57014", "message": "the database did not answer in time"}
        assert c.reply(queued, timeout=15)       # answered, one way or the other
    finally:
        os.kill(pids[0], signal.SIGCONT)
    wait_for(lambda: "result" in c.request("ping"), what="ping")
    wait_for(lambda: "result" in c.request("send", queue="orders", body="after"),
             timeout=15, what="a send after recovery")
    c.close()
    drain(env, "orders")


def test_no_database_is_57P03_and_shutdown_is_57P01_then_1001(make_gw, env):
    g = make_gw(db_conninfo="'host=127.0.0.1 port=1 dbname=x user=svcbus_gw connect_timeout=1'")
    c = Client(g.port, token=make_token("alice"))
    e = c.err("send", queue="orders", body=1)
    assert e["code"] == "57P03" and "database" in e["message"]
    c.close()

    g2 = make_gw(pool_size=1)
    d = Client(g2.port, token=make_token("alice"))
    d.ok("send", queue="orders", body="warm")
    pids = own_backends(env, g2)
    os.kill(pids[0], signal.SIGSTOP)
    try:
        rid = d.send_request("send", queue="orders", body="in flight at shutdown")
        time.sleep(0.3)
        g2.proc.send_signal(signal.SIGTERM)
        r = d.reply(rid, timeout=15)
        assert r["error"]["code"] == "57P01", r
        code, _ = d.wait_closed(timeout=15)
        assert code == 1001
    finally:
        os.kill(pids[0], signal.SIGCONT)
    assert g2.proc.wait(15) == 0
    drain(env, "orders")


# ------------------------------------------------------------------ TLS


def test_tls_when_a_certificate_is_configured(make_gw, env, tmp_path):
    """With tls_cert_file/tls_key_file the port speaks only TLS: wss:// and
    https:// work with the certificate as trust anchor, plain ws:// does not."""
    import ssl
    import subprocess
    cert, key = str(tmp_path / "gw.crt"), str(tmp_path / "gw.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", key, "-out", cert], check=True, capture_output=True)
    os.chmod(str(tmp_path), 0o755)
    g = make_gw(tls_cert_file=cert, tls_key_file=key)
    ctx = ssl.create_default_context(cafile=cert)
    with urllib.request.urlopen("https://127.0.0.1:%d/health" % g.port, context=ctx,
                                timeout=10) as r:
        assert r.status == 200
    c = Client(g.port, token=make_token("alice"), scheme="wss", ssl=ctx)
    assert c.ok("ping") == {"pong": True}
    assert "msg_id" in c.ok("send", queue="orders", body="over tls")
    c.close()
    with pytest.raises(Exception):
        Client(g.port, token=make_token("alice"))    # plain ws:// to a TLS port
    drain(env, "orders")
    bad = Gateway(env, gw_config(env, tls_cert_file=str(tmp_path / "missing.crt"),
                                 tls_key_file=key))
    bad.start(wait=False)
    assert bad.proc.wait(10) == 1
    assert 'cannot read tls_cert_file' in bad.log_text()
