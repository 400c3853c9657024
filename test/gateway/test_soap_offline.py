"""The SOAP reader and writers (adapters/soap.c) against a real SOAP client,
python3-zeep, without a network or a database: through test-tool
adapters/tool-bin/soap-tool.

Behaviour under test: the WSDL generated from the operation table loads in
zeep and offers exactly the operations the reader accepts; every envelope
zeep builds from it, SOAP 1.1 and 1.2, reads back into the same request
parameters the WebSocket protocol builds (typed fields, lists, optional
fields absent); zeep reads our responses and faults (with the SQLSTATE in
the detail).
"""
import json
import os
import subprocess

import pytest
from lxml import etree
from zeep import Client
from zeep.exceptions import Fault
from zeep.transports import Transport

ROOT = os.path.realpath(os.path.join(os.path.dirname(__file__), "..", ".."))
TOOL = os.path.join(ROOT, "adapters", "tool-bin", "soap-tool")
URL = "http://127.0.0.1:9/soap"


@pytest.fixture(scope="module")
def wsdl(tmp_path_factory):
    subprocess.run(["make", "-s", "-C", os.path.join(ROOT, "adapters"), "tools"], check=True)
    path = tmp_path_factory.mktemp("soap") / "svcbus.wsdl"
    path.write_bytes(subprocess.run([TOOL, "wsdl", URL], check=True, capture_output=True).stdout)
    return str(path)


def client(wsdl, binding):
    c = Client(wsdl, transport=Transport(timeout=1))
    return c, c.bind("svcbus", binding)


def read_back(c, service, op, content_type, **args):
    env = c.create_message(service, op, **args)
    out = subprocess.run([TOOL, "parse", content_type], input=etree.tostring(env),
                         check=True, capture_output=True).stdout
    return json.loads(out)


def tool(*args):
    return subprocess.run([TOOL] + list(args), check=True, capture_output=True).stdout


def test_wsdl_offers_exactly_the_operations_the_reader_accepts(wsdl):
    ops = tool("ops").decode().split()
    assert "send" in ops and "subscribe" not in ops and "auth" not in ops
    for binding in ("soap11", "soap12"):
        c, _ = client(wsdl, binding)
        port = c.wsdl.services["svcbus"].ports[binding]
        assert sorted(port.binding._operations) == sorted(ops)
        assert port.binding_options["address"] == URL


@pytest.mark.parametrize("binding,ct", [("soap11", "text/xml; charset=utf-8"),
                                        ("soap12", "application/soap+xml; charset=utf-8")])
def test_zeep_envelopes_read_back_into_the_websocket_parameters(wsdl, binding, ct):
    c, s = client(wsdl, binding)
    r = read_back(c, s, "send", ct, queue="orders", body='{"n": 1}', priority=3, delay=0.5)
    assert r["op"] == "send" and r["version"] == (1 if binding == "soap11" else 2)
    assert r["params"][:5] == ["orders", '{"n":1}', None, "0.5", "3"]
    r = read_back(c, s, "ack", ct, queue="orders", msg_ids=[4, 5, 6])
    assert r["params"] == ["orders", "{4,5,6}"]
    r = read_back(c, s, "try_lock", ct, name="l", ttl=5)
    assert r["params"][:2] == ["l", "5"]
    r = read_back(c, s, "cache_set", ct, key="k", value="[1, 2]", ttl=None)
    assert r["params"][:2] == ["k", "[1,2]"]
    r = read_back(c, s, "leader", ct, election="e")
    assert r["params"] == ["e"]


def test_every_operation_with_its_required_fields_reads_back(wsdl):
    """Every offered operation, built by zeep with only its required fields
    (strings "x", integers 1, numbers 1.5, JSON "{}"), is accepted."""
    c, s = client(wsdl, "soap11")
    for op in tool("ops").decode().split():
        el = c.get_element("{urn:svcbus:v1}" + op)
        args = {}
        for name, e in el.type.elements:
            if e.min_occurs == 0:
                continue
            t = type(e.type).__name__
            args[name] = {"Long": 1, "Double": 1.5}.get(t, "{}" if name in ("body", "value", "bodies")
                                                        else "x")
            if name == "msg_ids":
                args[name] = [1]
            if name == "bodies":
                args[name] = "[1]"
        r = read_back(c, s, op, "text/xml", **args)
        assert r.get("op") == op, (op, r)


def test_zeep_reads_responses_and_faults(wsdl):
    c, s = client(wsdl, "soap11")
    binding = c.wsdl.services["svcbus"].ports["soap11"].binding
    op = binding.get("send")
    resp = tool("response", "11", "send", '{"msg_id": 42}')
    reply = type("R", (), {"status_code": 200, "content": resp, "encoding": "utf-8",
                           "headers": {"Content-Type": "text/xml; charset=utf-8"}})()
    got = binding.process_reply(c, op, reply)
    assert etree.tostring(got[0]).decode().endswith(">42</bus:msg_id>")
    for version, port in (("11", "soap11"), ("12", "soap12")):
        b = c.wsdl.services["svcbus"].ports[port].binding
        fault = tool("fault", version, "42501", 'permission denied for queue "q<"')
        with pytest.raises(Fault) as e:
            b.process_error(etree.fromstring(fault), b.get("send"))
        assert e.value.message == 'permission denied for queue "q<"'
        detail = etree.tostring(e.value.detail).decode()
        assert "<bus:sqlstate>42501</bus:sqlstate>" in detail


def test_refusals_name_their_sqlstate(wsdl):
    """(wsdl: the fixture builds the tool.)"""
    bad = b'<?xml version="1.0"?><!DOCTYPE e [<!ENTITY x SYSTEM "file:///etc/passwd">]><e>&x;</e>'
    out = json.loads(subprocess.run([TOOL, "parse", "text/xml"], input=bad, check=True,
                                    capture_output=True).stdout)
    assert out["sqlstate"] == "08P01" and "root" not in json.dumps(out)
