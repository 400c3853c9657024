"""A small blocking client for the gateway's svcbus.v1 WebSocket protocol.

Debian 12's python3-websockets (10.4) has only the asyncio API; this wraps
it in a private event loop so tests read top to bottom.  Also: HS256 token
signing with the standard library (hmac, hashlib, base64), independent of
the gateway's own C code, and the test database's roles.
"""

import asyncio
import base64
import hashlib
import hmac
import json
import time

import websockets

SECRET = "svcbus-ws-test-secret-0123456789"
SUBPROTOCOL = "svcbus.v1"

# Roles: the gateway logs in as svcbus_gw (NOINHERIT, no rights of its own)
# and may become alice and bob; mallory exists but is not granted to it.
SETUP_SQL = """
DO $$ BEGIN
  CREATE ROLE svcbus_gw LOGIN NOINHERIT;
  CREATE ROLE alice NOLOGIN;
  CREATE ROLE bob NOLOGIN;
  CREATE ROLE mallory NOLOGIN;
EXCEPTION WHEN duplicate_object THEN NULL; END $$;
GRANT alice, bob TO svcbus_gw;
"""


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_token(role="alice", exp_in=3600, secret=SECRET, alg="HS256", extra=None, **claims):
    header = {"alg": alg, "typ": "JWT"}
    payload = {"role": role}
    if exp_in is not None:
        payload["exp"] = int(time.time()) + exp_in
    payload.update(claims)
    payload.update(extra or {})
    h = b64url(json.dumps(header).encode())
    p = b64url(json.dumps(payload).encode())
    if alg == "none":
        return h + "." + p + "."
    sig = hmac.new(secret.encode(), (h + "." + p).encode(), hashlib.sha256).digest()
    return h + "." + p + "." + b64url(sig)


_LOOP = None


def loop():
    """The one event loop every Client of this process runs on."""
    global _LOOP
    if _LOOP is None or _LOOP.is_closed():
        _LOOP = asyncio.new_event_loop()
        asyncio.set_event_loop(_LOOP)
    return _LOOP


class Client:
    """One WebSocket connection; requests get ids 1, 2, ..."""

    def __init__(self, port, token=None, path="/ws", subprotocols=(SUBPROTOCOL,),
                 headers=None, origin=None, auth=True, max_size=64 * 1024 * 1024,
                 scheme="ws", ssl=None):
        self.loop = loop()
        self.next_id = 0
        self.pushes = []
        self.replies = {}
        extra = dict(headers or {})
        kw = {}
        if origin:
            kw["origin"] = origin
        if ssl is not None:
            kw["ssl"] = ssl
        self.ws = self.loop.run_until_complete(websockets.connect(
            "%s://127.0.0.1:%d%s" % (scheme, port, path), subprotocols=list(subprotocols) or None,
            extra_headers=extra, max_size=max_size, open_timeout=10, ping_interval=None, **kw))
        if token is not None and auth:
            r = self.request("auth", token=token)
            assert "result" in r, r

    # -- raw ------------------------------------------------------------
    def send_raw(self, data):
        self.loop.run_until_complete(self.ws.send(data))

    def recv_raw(self, timeout=10):
        return self.loop.run_until_complete(asyncio.wait_for(self.ws.recv(), timeout))

    def recv(self, timeout=10):
        return json.loads(self.recv_raw(timeout))

    def _next(self, left, what):
        """Next message within left seconds; AssertionError when none comes."""
        try:
            return self.recv(left)
        except asyncio.TimeoutError:
            raise AssertionError("timed out waiting for " + what)

    def wait_closed(self, timeout=10):
        """Read until the server closes; returns (code, reason)."""
        async def drain():
            try:
                while True:
                    await self.ws.recv()
            except websockets.ConnectionClosed as e:
                return e.code, e.reason
        return self.loop.run_until_complete(asyncio.wait_for(drain(), timeout))

    # -- protocol -------------------------------------------------------
    def send_request(self, op, **fields):
        self.next_id += 1
        msg = {"id": self.next_id, "op": op}
        msg.update(fields)
        self.send_raw(json.dumps(msg))
        return self.next_id

    def reply(self, rid, timeout=15):
        """The reply to request rid; pushes read meanwhile are kept."""
        deadline = time.time() + timeout
        while rid not in self.replies:
            left = deadline - time.time()
            assert left > 0, "no reply to request %s (pushes: %s)" % (rid, self.pushes[-5:])
            m = self._next(left, "reply %s" % rid)
            if "push" in m:
                self.pushes.append(m)
            else:
                self.replies[m.get("id")] = m
        return self.replies.pop(rid)

    def request(self, op, timeout=15, **fields):
        return self.reply(self.send_request(op, **fields), timeout)

    def ok(self, op, **fields):
        r = self.request(op, **fields)
        assert "result" in r, r
        return r["result"]

    def err(self, op, **fields):
        r = self.request(op, **fields)
        assert "error" in r, r
        return r["error"]

    def push(self, kind="message", timeout=10):
        """Next push of kind (earlier pushes of other kinds are kept)."""
        deadline = time.time() + timeout
        while True:
            for i, p in enumerate(self.pushes):
                if p["push"] == kind:
                    return self.pushes.pop(i)
            left = deadline - time.time()
            assert left > 0, "no %s push" % kind
            m = self._next(left, "a %s push" % kind)
            if "push" in m:
                self.pushes.append(m)
            else:
                self.replies[m.get("id")] = m

    def close(self):
        try:
            self.loop.run_until_complete(asyncio.wait_for(self.ws.close(), 5))
        except Exception:
            pass
