"""Fixtures and helpers for the svcbus-gateway end-to-end tests.

Built on test/harness/svcbus_harness.py (Cluster, Gateway, free_port,
wait_for); everything extra the gateway tests need lives here, not in the
shared harness: an HTTP client on urllib that returns error statuses
instead of raising, a strict Prometheus text-format parser, lookups of the
gateway's backends in pg_stat_activity, and a module-wide cluster that a
test may stop or kill as long as it leaves it running.
"""

import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "harness"))

from svcbus_harness import Cluster, Gateway, free_port, wait_for  # noqa: E402

ROOT = os.path.realpath(os.path.join(os.path.dirname(__file__), "..", ".."))
GATEWAY_BIN = os.path.join(ROOT, "adapters", "svcbus-gateway")
APP_NAME = "svcbus-gateway"


def http(url, method="GET", data=None, headers=None, timeout=10):
    """(status, headers dict with lower-case names, body bytes); never raises on 4xx/5xx."""
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def health(gw, timeout=10):
    """(status, parsed JSON) of GET /health."""
    status, _, body = http(gw.url("/health"), timeout=timeout)
    return status, json.loads(body)


_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(,|$)')


def parse_prometheus(text):
    """Parse exposition format 0.0.4 strictly.

    Returns {(name, frozenset(labels.items())): float}. Raises
    AssertionError on a malformed line, a sample before its # TYPE, or a
    family declared twice.
    """
    types = {}
    samples = {}
    assert text.endswith("\n"), "exposition must end with a newline"
    for line in text.splitlines():
        if line.startswith("# HELP "):
            assert len(line.split(" ", 3)) == 4, line
            continue
        if line.startswith("# TYPE "):
            _, _, name, typ = line.split(" ")
            assert typ in ("counter", "gauge", "histogram", "summary", "untyped"), line
            assert name not in types, "family declared twice: " + name
            types[name] = typ
            continue
        assert not line.startswith("#"), "unknown comment: " + line
        m = _SAMPLE.match(line)
        assert m, "malformed sample line: %r" % line
        name, labeltext, value = m.groups()
        assert name in types, "sample before its # TYPE: " + line
        labels = {}
        if labeltext:
            pos = 0
            while pos < len(labeltext):
                lm = _LABEL.match(labeltext, pos)
                assert lm, "malformed labels: %r" % line
                labels[lm.group(1)] = lm.group(2)
                pos = lm.end()
        float(value)
        key = (name, frozenset(labels.items()))
        assert key not in samples, "duplicate series: " + line
        samples[key] = float(value)
    return samples


def metric(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())), 0.0)


def scrape(gw):
    status, headers, body = http(gw.url("/metrics"))
    assert status == 200
    return headers, parse_prometheus(body.decode())


def gateway_backends(cluster, app=APP_NAME):
    """PIDs of the gateway's backends, per pg_stat_activity."""
    rows = cluster.execute(
        "SELECT pid FROM pg_stat_activity WHERE application_name = %s ORDER BY pid", (app,))
    return [r[0] for r in rows]


@pytest.fixture(scope="module")
def cluster():
    c = Cluster("gw1")
    c.start()
    yield c
    c.destroy()


@pytest.fixture
def running_cluster(cluster):
    """The module's cluster, (re)started if an earlier test left it down or stuck."""
    try:
        cluster.execute("SELECT 1")
    except Exception:
        cluster.stop("immediate")
        cluster.start()
    return cluster


@pytest.fixture
def make_gateway(running_cluster):
    """Factory: make_gateway(extra_config=None, env=None, start=True) -> Gateway; all stopped at teardown."""
    started = []

    def make(extra_config=None, env=None, start=True):
        g = Gateway(running_cluster, extra_config=extra_config, env=env)
        started.append(g)
        if start:
            g.start()
        return g

    yield make
    for g in started:
        g.stop()


def run_gateway_once(args, env=None, timeout=10):
    """Run the binary to completion (for --check-config, bad configs)."""
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([GATEWAY_BIN] + args, capture_output=True, text=True,
                          timeout=timeout, env=e, stdin=subprocess.DEVNULL)


def listening_sockets(pid):
    """[(address, port)] of the TCP sockets process pid listens on, sorted.

    Parsed from /proc/net/tcp and tcp6 (state 0A is LISTEN), matched by
    socket inode against /proc/PID/fd, so no `ss` or `netstat` is needed."""
    inodes = set()
    fd_dir = "/proc/%d/fd" % pid
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(os.path.join(fd_dir, fd))
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for table, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        try:
            lines = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if f[3] != "0A" or f[9] not in inodes:
                continue
            hexaddr, hexport = f[1].split(":")
            raw = bytes.fromhex(hexaddr)
            if v6:
                import socket as so
                raw = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
                addr = so.inet_ntop(so.AF_INET6, raw)
            else:
                addr = ".".join(str(b) for b in raw[::-1])
            found.append((addr, int(hexport, 16)))
    return sorted(found)
