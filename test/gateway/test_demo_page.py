"""The demo page, driven in headless Chromium (Debian's chromium).

The gateway serves GET / from web_root (here the repository's
adapters/web); Chromium loads it over HTTP, the page's own svcbus.js talks
svcbus.v1 over WebSocket. The test clicks the page's buttons through the
DevTools protocol (spoken with python3-websockets), then judges what the
page shows and what the database holds. The screenshot is kept in
test/results-gateway/demo-page.png.
"""

import asyncio
import base64
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.request

import pytest
import websockets

from conftest import Gateway, wait_for
from wsclient import SECRET, SETUP_SQL, loop, make_token

ROOT = os.path.realpath(os.path.join(os.path.dirname(__file__), "..", ".."))
WEB = os.path.join(ROOT, "adapters", "web")
RESULTS = os.path.join(ROOT, "test", "results-gateway")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


class Browser:
    """Headless Chromium with one page, spoken to over the DevTools protocol."""

    def __init__(self):
        self.ws = None
        self.profile = tempfile.mkdtemp(prefix="svcbus-chromium-")
        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu",
             "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check",
             "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
             "--user-data-dir=" + self.profile, "--window-size=1200,800", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            self._attach()
        except BaseException:
            self.close()                 # never leave a browser behind
            raise

    def _attach(self):
        port = None
        deadline = time.time() + 60
        while time.time() < deadline and port is None:
            line = self.proc.stderr.readline()
            if not line and self.proc.poll() is not None:
                raise AssertionError("chromium exited with %s" % self.proc.returncode)
            m = re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", line)
            if m:
                port = int(m.group(1))
        assert port, "chromium did not open its DevTools port"
        # keep reading its stderr so a full pipe never blocks the browser
        threading.Thread(target=lambda: [None for _ in self.proc.stderr], daemon=True).start()
        with urllib.request.urlopen("http://127.0.0.1:%d/json/list" % port, timeout=10) as r:
            pages = [t for t in json.loads(r.read()) if t["type"] == "page"]
        self.loop = loop()
        self.ws = self.loop.run_until_complete(websockets.connect(
            pages[0]["webSocketDebuggerUrl"], max_size=64 * 1024 * 1024, ping_interval=None))
        self.next_id = 0
        self.console = []

    def call(self, method, **params):
        self.next_id += 1
        mid = self.next_id

        async def go():
            await self.ws.send(json.dumps({"id": mid, "method": method, "params": params}))
            while True:
                m = json.loads(await asyncio.wait_for(self.ws.recv(), 30))
                if m.get("method") == "Runtime.consoleAPICalled":
                    self.console.append(" ".join(str(a.get("value", a.get("description")))
                                                 for a in m["params"]["args"]))
                if m.get("method") == "Runtime.exceptionThrown":
                    self.console.append(m["params"]["exceptionDetails"].get("text", "?"))
                if m.get("id") == mid:
                    return m
        m = self.loop.run_until_complete(go())
        assert "error" not in m, m
        return m["result"]

    def eval(self, js):
        r = self.call("Runtime.evaluate", expression=js, awaitPromise=True, returnByValue=True)
        assert "exceptionDetails" not in r, (r, self.console)
        return r["result"].get("value")

    def wait(self, js, what, timeout=15):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.eval(js):
                return
            time.sleep(0.1)
        raise AssertionError("page never showed %s; console: %s; status: %s"
                             % (what, self.console, self.eval("document.body.innerText")))

    def close(self):
        if self.ws is not None:
            try:
                self.loop.run_until_complete(self.ws.close())
            except Exception:
                pass
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.profile, ignore_errors=True)


@pytest.fixture(scope="module")
def demo_env(cluster):
    cluster.execute(SETUP_SQL)
    cluster.execute("SELECT svcbus.create_queue('webq')")
    cluster.execute("SELECT svcbus.grant_queue('webq', 'alice', 'send')")
    cluster.execute("SELECT svcbus.grant_queue('webq', 'alice', 'receive')")
    g = Gateway(cluster, {"db_conninfo": "'%s'" % cluster.dsn(user="svcbus_gw"),
                          "jwt_secret": SECRET, "pool_size": "4", "web_root": WEB}).start()
    yield cluster, g
    g.stop()


@pytest.fixture
def browser():
    b = Browser()
    yield b
    b.close()


def test_page_and_module_are_served_with_their_types(demo_env):
    _, g = demo_env
    for path, mime in (("/", "text/html"), ("/svcbus.js", "text/javascript"),
                       ("/demo.js", "text/javascript")):
        with urllib.request.urlopen(g.url(path), timeout=10) as r:
            assert r.status == 200 and r.headers["Content-Type"].startswith(mime)
            assert len(r.read()) > 500


def test_send_from_the_page_arrives_live_and_the_lock_shows(demo_env, browser):
    """Connect, subscribe, send from the page: the message arrives and is
    acked; a message sent from SQL arrives too; the lock shows its token."""
    cluster, g = demo_env
    cluster.execute("SELECT svcbus.purge_queue('webq')")
    token = make_token("alice")
    browser.call("Page.enable")
    browser.call("Runtime.enable")
    browser.call("Page.navigate", url=g.url("/#token=%s&queue=webq" % token))
    browser.wait("document.readyState === 'complete' && !!window.svcbusDemo", "the page loaded")
    browser.eval("document.getElementById('connect').click()")
    browser.wait("document.getElementById('status').textContent === 'connected as alice'",
                 "connected as alice")
    browser.eval("document.getElementById('subscribe').click()")
    browser.wait("document.getElementById('subscribe').textContent === 'Subscribed to webq'",
                 "the subscription")
    browser.eval("document.getElementById('body').value = "
                 "JSON.stringify({hello: 'from chromium'}); document.getElementById('send').click()")
    browser.wait("/sent, msg_id \\d+/.test(document.getElementById('send-result').textContent)",
                 "the send's msg_id")
    sent = int(browser.eval("document.getElementById('send-result').textContent.split(' ').pop()"))
    browser.wait("!!document.querySelector('li.acked[data-msg-id=\"%d\"]')" % sent,
                 "the message arrive and be acked")
    assert "from chromium" in browser.eval("document.getElementById('messages').textContent")

    # a message sent by another client (SQL) is pushed to the page live
    other = cluster.execute("SELECT svcbus.send('webq', '{\"from\": \"sql\"}')")[0][0]
    browser.wait("!!document.querySelector('li.acked[data-msg-id=\"%d\"]')" % other,
                 "the SQL message arrive")

    browser.eval("document.getElementById('lock').click()")
    browser.wait("/fencing token \\d+, lease/.test(document.getElementById('lock-state').textContent)",
                 "the lock's fencing token")
    held = cluster.execute("SELECT token, owner FROM svcbus.locks WHERE name = 'demo-lock'")
    assert len(held) == 1 and held[0][1].startswith("ws:")
    assert ("fencing token %d" % held[0][0]) in browser.eval(
        "document.getElementById('lock-state').textContent")

    os.makedirs(RESULTS, exist_ok=True)
    png = base64.b64decode(browser.call("Page.captureScreenshot", format="png")["data"])
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10000
    with open(os.path.join(RESULTS, "demo-page.png"), "wb") as f:
        f.write(png)

    browser.eval("document.getElementById('unlock').click()")
    browser.wait("document.getElementById('lock-state').textContent.startsWith('released')",
                 "the release")
    wait_for(lambda: not cluster.execute("SELECT 1 FROM svcbus.locks WHERE name = 'demo-lock'"),
             timeout=10, what="the lock released in the database")
    stats = cluster.execute("SELECT visible, in_flight FROM svcbus.queue_stats WHERE name = 'webq'")
    assert stats == [(0, 0)]                         # both messages settled, none left


def test_bad_token_is_shown_by_the_page(demo_env, browser):
    _, g = demo_env
    browser.call("Runtime.enable")
    browser.call("Page.navigate", url=g.url("/#token=%s" % make_token("alice", secret="wrong")))
    browser.wait("document.readyState === 'complete' && !!window.svcbusDemo", "the page loaded")
    browser.eval("document.getElementById('connect').click()")
    browser.wait("document.getElementById('conn-error').textContent.startsWith('28000')",
                 "the 28000 refusal")
