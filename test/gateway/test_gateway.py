"""End-to-end tests of svcbus-gateway against a real PostgreSQL 15 cluster.

Each test starts the real daemon (adapters/svcbus-gateway) through the
shared harness and judges it only by what clients observe: HTTP answers
(urllib or raw sockets), exit codes, log lines, and pg_stat_activity.
Faults are real: backends terminated by pg_terminate_backend, the
database stopped or its postmaster SIGKILLed, a backend frozen with
SIGSTOP (the database "hangs"), malformed and oversize HTTP requests.

Run: /usr/bin/python3 -m pytest test/gateway   (after make install and
make -C adapters, which builds the daemon and the unit-test binaries).
"""

import json
import os
import re
import signal
import socket
import subprocess
import threading
import time

import pytest

from conftest import (APP_NAME, ROOT, free_port, gateway_backends, health, http, listening_sockets,
                      metric, parse_prometheus, run_gateway_once, scrape, wait_for)


def raw_request(port, data, timeout=5):
    """Send raw bytes, read until the server closes; returns the bytes (b'' if none)."""
    out = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(data)
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                out += chunk
        except (ConnectionResetError, BrokenPipeError):
            pass
    return out


def alive(gw):
    return gw.proc.poll() is None


# ---------------------------------------------------------------- endpoints

def test_health_reports_database_and_extension(make_gateway, running_cluster):
    """/health: 200, database reachable, the installed extension's version, pool state."""
    gw = make_gateway()
    installed = running_cluster.execute(
        "SELECT extversion FROM pg_extension WHERE extname = 'svcbus'")[0][0]
    assert installed == "0.1"
    status, headers, body = http(gw.url("/health"))
    assert status == 200
    assert headers["content-type"].startswith("application/json")
    doc = json.loads(body)
    assert doc["gateway"] == "up"
    assert doc["database"] == "reachable"
    assert doc["extension_version"] == installed
    assert doc["pool"]["size"] == 2
    assert doc["pool"]["connected"] + doc["pool"]["connecting"] == 2


def test_health_extension_not_installed(make_gateway, running_cluster):
    """In a database without the extension: still 200, extension_version null."""
    running_cluster.execute("DROP DATABASE IF EXISTS noext", dbname="postgres")
    running_cluster.execute("CREATE DATABASE noext", dbname="postgres")
    gw = make_gateway({"db_conninfo": "'%s'" % running_cluster.dsn(dbname="noext")})
    status, doc = health(gw)
    assert status == 200
    assert doc["database"] == "reachable"
    assert doc["extension_version"] is None


def test_metrics_prometheus_format_and_counters_move(make_gateway):
    """/metrics parses as Prometheus text 0.0.4 and its counters follow the traffic."""
    gw = make_gateway()
    headers, before = scrape(gw)
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    assert metric(before, "svcbus_gateway_up") == 1
    assert metric(before, "svcbus_gateway_build_info", version="0.1") == 1
    for state in ("connected", "connecting", "down"):
        assert ("svcbus_gateway_db_connections", frozenset({("state", state)})) in before
    for name in ("svcbus_gateway_db_reconnects_total", "svcbus_gateway_db_queries_total",
                 "svcbus_gateway_db_query_errors_total", "svcbus_gateway_db_query_timeouts_total"):
        assert (name, frozenset()) in before, name

    for _ in range(3):
        assert http(gw.url("/health"))[0] == 200
    assert http(gw.url("/nope"))[0] == 404
    _, after = scrape(gw)
    h200 = dict(path="/health", code="200")
    assert (metric(after, "svcbus_gateway_http_requests_total", **h200)
            - metric(before, "svcbus_gateway_http_requests_total", **h200)) == 3
    assert metric(after, "svcbus_gateway_http_requests_total", path="other", code="404") == 1
    assert (metric(after, "svcbus_gateway_db_queries_total")
            - metric(before, "svcbus_gateway_db_queries_total")) >= 3
    # the label set is bounded: no raw paths leak into labels
    paths = {dict(k[1]).get("path") for k in after if k[0] == "svcbus_gateway_http_requests_total"}
    assert paths <= {"/health", "/metrics", "other"}


def test_unknown_path_is_404_json(make_gateway):
    gw = make_gateway()
    for path in ("/index.htm", "/web/demo.js", "/nope", "/health/extra", "/HEALTH", "/metrics.txt"):
        status, headers, body = http(gw.url(path))
        assert status == 404, path
        assert headers["content-type"].startswith("application/json")
        assert json.loads(body) == {"error": "not found"}


def test_non_get_is_405(make_gateway):
    """POST (with a body), PUT, DELETE on known paths: 405 with Allow: GET."""
    gw = make_gateway()
    for method, path, data in (("POST", "/health", b"x=1"), ("PUT", "/metrics", b"{}"),
                               ("DELETE", "/health", None)):
        status, headers, body = http(gw.url(path), method=method, data=data)
        assert status == 405, (method, path)
        assert headers.get("allow") == "GET"
        assert json.loads(body) == {"error": "method not allowed"}
    assert http(gw.url("/health"))[0] == 200


# ---------------------------------------------------------- database faults

def test_terminated_backends_are_reported_and_replaced(make_gateway, running_cluster):
    """Acceptance: killing the gateway's connections shows in /health and the pool reconnects."""
    gw = make_gateway({"pool_size": "2"})
    before = wait_for(lambda: (lambda p: p if len(p) == 2 else None)(gateway_backends(running_cluster)),
                      what="two gateway backends")
    _, doc0 = health(gw)
    reconnects0 = doc0["pool"]["reconnects"]

    killed = running_cluster.execute(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = %s",
        (APP_NAME,))[0][0]
    assert killed == 2

    def recovered():
        status, doc = health(gw)
        pids = gateway_backends(running_cluster)
        if (status == 200 and doc["pool"]["connected"] == 2 and len(pids) == 2
                and not set(pids) & set(before)):
            return doc
        return None
    doc = wait_for(recovered, timeout=10, what="pool reconnected with new backends")
    assert doc["pool"]["reconnects"] >= reconnects0 + 2
    assert "terminating connection due to administrator command" in doc["pool"]["last_error"]
    assert doc["pool"]["last_error_at"]
    log = gw.log_text()
    assert "event=db_disconnected" in log
    assert "administrator command" in log
    assert log.count("event=db_connected") >= 4
    _, m = scrape(gw)
    assert metric(m, "svcbus_gateway_db_reconnects_total") >= 2


def test_stopped_database_gives_503_fast_and_recovers(make_gateway, running_cluster):
    """Database down: 503 "unreachable" within the deadline (never hangs); back up: 200."""
    gw = make_gateway({"health_timeout_ms": "1500", "reconnect_max_ms": "500"})
    wait_for(lambda: health(gw)[0] == 200, what="healthy gateway")
    assert running_cluster.stop("fast") == 0
    try:
        t0 = time.monotonic()
        status, doc = health(gw, timeout=10)
        elapsed = time.monotonic() - t0
        assert status == 503
        assert elapsed < 1.5 + 1.0
        assert doc["gateway"] == "up"
        assert doc["database"] == "unreachable"
        assert doc["error"]
        assert doc["extension_version"] is None
        # repeated probes during the outage stay fast too
        for _ in range(3):
            t0 = time.monotonic()
            assert health(gw)[0] == 503
            assert time.monotonic() - t0 < 2.5
        _, m = scrape(gw)
        assert metric(m, "svcbus_gateway_db_connections", state="connected") == 0
        assert metric(m, "svcbus_gateway_http_requests_total", path="/health", code="503") >= 4
    finally:
        running_cluster.start()
    wait_for(lambda: health(gw)[0] == 200, timeout=15, what="/health 200 after restart")
    assert alive(gw)


def test_killed_postmaster_gives_503_and_recovers(make_gateway, running_cluster):
    """SIGKILL of the postmaster (no goodbye from the server): 503, then 200 after restart."""
    gw = make_gateway({"health_timeout_ms": "1500", "reconnect_max_ms": "500"})
    wait_for(lambda: health(gw)[0] == 200, what="healthy gateway")
    running_cluster.kill9_postmaster()
    try:
        status, doc = wait_for(lambda: (lambda r: r if r[0] == 503 else None)(health(gw)),
                               timeout=10, what="503 after postmaster kill")
        assert doc["database"] == "unreachable"
    finally:
        running_cluster.start()
    wait_for(lambda: health(gw)[0] == 200, timeout=20, what="/health 200 after crash restart")
    assert "event=db_disconnected" in gw.log_text()


def test_hung_database_hits_the_deadline(make_gateway, running_cluster):
    """A frozen backend (SIGSTOP): /health answers 503 at its deadline, then recovers."""
    gw = make_gateway({"pool_size": "1", "health_timeout_ms": "1000"})
    pids = wait_for(lambda: gateway_backends(running_cluster), what="gateway backend")
    assert len(pids) == 1
    os.kill(pids[0], signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        status, doc = health(gw, timeout=10)
        elapsed = time.monotonic() - t0
        assert status == 503
        assert 0.9 <= elapsed < 8.0      # the deadline (1 s), not the frozen backend; slack for a loaded machine
        assert "timed out" in doc["error"]
    finally:
        os.kill(pids[0], signal.SIGCONT)
    wait_for(lambda: health(gw)[0] == 200, timeout=10, what="recovery after the hung backend")
    _, m = scrape(gw)
    assert metric(m, "svcbus_gateway_db_query_timeouts_total") >= 1
    assert pids[0] not in gateway_backends(running_cluster)


# ------------------------------------------------------- process behaviour

def test_sigterm_exits_zero_with_shutdown_line(make_gateway):
    gw = make_gateway()
    assert health(gw)[0] == 200
    assert gw.stop() == 0
    lines = gw.log_text().splitlines()
    assert any("event=shutdown" in l and "signal=SIGTERM" in l and "level=info" in l
               for l in lines), lines[-5:]
    assert lines[-1].startswith("ts=")          # every line is logfmt


def test_sigterm_with_request_in_flight(make_gateway, running_cluster):
    """SIGTERM while /health waits on a frozen backend: the client gets a 503, exit is prompt and clean."""
    gw = make_gateway({"pool_size": "1", "health_timeout_ms": "5000"})
    pids = wait_for(lambda: gateway_backends(running_cluster), what="gateway backend")
    os.kill(pids[0], signal.SIGSTOP)
    answers = []
    try:
        t = threading.Thread(target=lambda: answers.append(health(gw, timeout=10)), daemon=True)
        t.start()
        wait_for(lambda: metric(scrape(gw)[1], "svcbus_gateway_db_busy_connections") == 1,
                 what="probe running on the frozen backend")
        t0 = time.monotonic()
        assert gw.stop(timeout=5) == 0
        assert time.monotonic() - t0 < 3
        t.join(5)
    finally:
        os.kill(pids[0], signal.SIGCONT)
    assert answers, "in-flight request got no HTTP answer"
    status, doc = answers[0]
    assert status == 503
    assert doc["error"] == "gateway is shutting down"


def test_sighup_is_logged_and_ignored(make_gateway):
    gw = make_gateway()
    os.kill(gw.pid, signal.SIGHUP)
    wait_for(lambda: "signal=SIGHUP" in gw.log_text(), what="SIGHUP log line")
    assert alive(gw)
    assert health(gw)[0] == 200


def test_logs_are_one_logfmt_line_per_event(make_gateway):
    gw = make_gateway()
    http(gw.url("/health"))
    http(gw.url("/nope"))
    wait_for(lambda: "path=/nope" in gw.log_text(), what="access log line")
    text = gw.log_text()
    assert "event=listen addr=127.0.0.1 port=%d" % gw.port in text
    for line in text.splitlines():
        assert line.startswith("ts=") and " level=" in line and " event=" in line, line
    assert any("event=http_request method=GET path=/nope status=404" in l
               for l in text.splitlines())


def test_listens_on_loopback_only(make_gateway):
    """Every TCP socket the gateway listens on is bound to 127.0.0.1.

    Read from /proc (no `ss`: a fresh Debian 12 has no iproute2): the
    listening sockets in /proc/net/tcp{,6} whose inode is one of the
    gateway's open file descriptors."""
    gw = make_gateway({"listen_address": "127.0.0.1"})
    mine = listening_sockets(gw.pid)
    assert mine, "no listening socket found for pid %d" % gw.pid
    assert mine == [("127.0.0.1", gw.port)], mine


def test_listening_socket_reader_sees_wildcard():
    """The /proc reader above is not blind: a socket bound to 0.0.0.0 shows as such."""
    import socket as so
    s = so.socket()
    s.bind(("0.0.0.0", 0))
    s.listen(1)
    try:
        assert ("0.0.0.0", s.getsockname()[1]) in listening_sockets(os.getpid())
    finally:
        s.close()


# ------------------------------------------------------------ configuration

def test_bad_config_unknown_key_names_line(tmp_path):
    conf = tmp_path / "gw.conf"
    conf.write_text("# comment\nhttp_port = 18099\nno_such_key = 1\n")
    r = run_gateway_once(["-c", str(conf)])
    assert r.returncode == 2
    assert 'gw.conf:3: unknown key \\"no_such_key\\"' in r.stderr
    assert "event=config_error" in r.stderr


def test_bad_config_value_names_line(tmp_path):
    conf = tmp_path / "gw.conf"
    conf.write_text("http_port = 18099\npool_size = 0\n")
    r = run_gateway_once(["-c", str(conf)])
    assert r.returncode == 2
    assert "gw.conf:2: invalid value for pool_size" in r.stderr
    conf.write_text("log_level = chatty\n")
    r = run_gateway_once(["-c", str(conf)])
    assert r.returncode == 2
    assert "gw.conf:1: invalid value for log_level" in r.stderr


def test_bad_environment_value_names_variable(tmp_path):
    r = run_gateway_once(["--check-config"], env={"SVCBUS_GATEWAY_HTTP_PORT": "99999"})
    assert r.returncode == 2
    assert "environment variable SVCBUS_GATEWAY_HTTP_PORT: invalid value for http_port" in r.stderr


def test_check_config_and_version(tmp_path):
    conf = tmp_path / "gw.conf"
    conf.write_text("http_port = 18099\ndb_conninfo = 'host=/tmp dbname=svcbus'\n")
    r = run_gateway_once(["-c", str(conf), "--check-config"])
    assert r.returncode == 0, r.stderr
    assert "configuration ok" in r.stdout
    r = run_gateway_once(["--version"])
    assert r.returncode == 0 and r.stdout.strip() == "svcbus-gateway 0.1"
    r = run_gateway_once(["-c", str(tmp_path / "missing.conf")])
    assert r.returncode == 2
    assert "could not open configuration file" in r.stderr
    r = run_gateway_once(["--bogus"])
    assert r.returncode == 2


def test_shipped_example_config_is_valid():
    example = os.path.join(ROOT, "adapters", "svcbus-gateway.conf.example")
    r = run_gateway_once(["-c", example, "--check-config"])
    assert r.returncode == 0, r.stderr


def test_env_override_changes_port(make_gateway):
    """SVCBUS_GATEWAY_HTTP_PORT beats http_port from the file."""
    env_port = free_port()
    gw = make_gateway(env={"SVCBUS_GATEWAY_HTTP_PORT": str(env_port)}, start=False)
    gw.start(wait=False)
    url = "http://127.0.0.1:%d/health" % env_port
    wait_for(lambda: http(url, timeout=2)[0] == 200, what="gateway on the env port")
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", gw.port), timeout=1).close()
    assert "port=%d" % env_port in gw.log_text()


def test_port_in_use_fails_cleanly(make_gateway):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        gw = make_gateway({"http_port": str(port)}, start=False)
        gw.start(wait=False)
        assert gw.proc.wait(10) == 1
    assert "event=startup_error" in gw.log_text()


# ------------------------------------------------------------ hostile input

def test_oversize_header_refused_without_crash(make_gateway):
    gw = make_gateway({"max_http_header_bytes": "2048"})
    big = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 8000 + b"\r\n\r\n"
    reply = raw_request(gw.port, big)
    assert not reply.startswith(b"HTTP/1.1 200")
    # under the limit still works on a fresh connection
    assert health(gw)[0] == 200
    assert alive(gw)


def test_malformed_requests_do_not_crash(make_gateway):
    gw = make_gateway()
    probes = [
        b"GARBAGE\r\n\r\n",
        b"GET\r\n\r\n",
        b"GET /health HTTP/9.9\r\n\r\n",
        b"POST /health HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"POST /health HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\nabc",
        b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + b"\x00" * 64,
        b"GET /" + b"%" * 3000 + b" HTTP/1.1\r\n\r\n",
        b"GET /health HTTP/1.1\r\n" + b"X: y\r\n" * 500 + b"\r\n",
    ]
    for p in probes:
        try:
            raw_request(gw.port, p, timeout=8)
        except socket.timeout:
            pass
        assert alive(gw), p[:40]
    assert health(gw)[0] == 200


def test_pipelined_requests_answered_in_order(make_gateway):
    gw = make_gateway()
    reply = raw_request(gw.port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
                                 b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n"
                                 b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", reply)
    assert statuses == [b"200", b"404", b"200"]


def test_many_concurrent_health_requests(make_gateway):
    """More requests than connections: they queue (bounded) and all get answers."""
    gw = make_gateway({"pool_size": "2"})
    results = []

    def one():
        results.append(health(gw)[0])
    threads = [threading.Thread(target=one) for _ in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert len(results) == 40
    assert set(results) == {200}


# ------------------------------------------------------------ pool library

def test_pool_unit_tests_against_live_database(running_cluster):
    """The C pool tests that need a server, run against this cluster (none skipped)."""
    binary = os.path.join(ROOT, "adapters", "unit-bin", "gateway_pgpool_test")
    subprocess.run(["make", "-s", "-C", os.path.join(ROOT, "adapters"),
                    "unit-bin/gateway_pgpool_test"], check=True)
    env = dict(os.environ, SVCBUS_TEST_PG_CONNINFO=running_cluster.dsn())
    r = subprocess.run([binary], capture_output=True, text=True, timeout=120, env=env)
    out = r.stdout + r.stderr           # cmocka prints its summary on stderr
    assert r.returncode == 0, out
    assert "[  PASSED  ] 15 test(s)." in out, out
    assert "SKIPPED" not in out


def test_every_config_key_is_documented():
    """Each key the parser accepts appears in the shipped example (as a
    commented default) and in adapters/README.md's table."""
    import re
    src = open(os.path.join(ROOT, "adapters", "config.c")).read()
    keys = re.findall(r'^\t\{"([a-z_]+)", K_', src, re.M)
    assert len(keys) >= 31
    example = open(os.path.join(ROOT, "adapters", "svcbus-gateway.conf.example")).read()
    readme = open(os.path.join(ROOT, "adapters", "README.md")).read()
    missing = [k for k in keys if not re.search(r"^#%s =" % k, example, re.M)]
    assert not missing, "not in the example: %s" % missing
    missing = [k for k in keys if "`%s`" % k not in readme]
    assert not missing, "not in adapters/README.md: %s" % missing
