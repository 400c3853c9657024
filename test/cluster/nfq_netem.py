#!/usr/bin/python3
"""A user-space stand-in for `tc qdisc ... netem` (delay, jitter, loss).

Why: the kernel of this machine kind is built without CONFIG_NET_SCH_NETEM
("Error: Specified qdisc kind is unknown"), but it has nfnetlink_queue.  So
netcluster.py sends the chosen packets to an NFQUEUE (an iptables rule with
--queue-bypass, so packets pass untouched when no daemon listens) and this
daemon, run inside the node's network namespace, holds each packet for
delay +- jitter milliseconds before accepting it, or drops it with the given
probability.  Packets are not copied to user space (copy mode "meta"): only
their ids travel.

It speaks the nfnetlink_queue protocol over a raw AF_NETLINK socket
(standard library only; Debian has no Python binding for libnetfilter_queue).

Usage (inside the namespace, as root):
    nfq_netem.py --queue N --delay MS [--jitter MS] [--loss PCT] [--seed S]

Like netem with jitter, packets may be reordered (each one gets its own
delay).  On SIGTERM/SIGINT every held packet is accepted at once, then the
queue is unbound and the daemon exits 0.  It prints "ready" on stdout once
bound.
"""

import argparse
import heapq
import os
import random
import select
import signal
import socket
import struct
import sys
import time

NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET = 0
NFQNL_MSG_VERDICT = 1
NFQNL_MSG_CONFIG = 2
NLM_F_REQUEST = 1
NLM_F_ACK = 4
NLMSG_ERROR = 2
NLMSG_DONE = 3
NFQA_CFG_CMD = 1
NFQA_CFG_PARAMS = 2
NFQA_CFG_QUEUE_MAXLEN = 3
NFQA_CFG_MASK = 4
NFQA_CFG_FLAGS = 5
NFQA_CFG_F_FAIL_OPEN = 1
NFQNL_CFG_CMD_BIND = 1
NFQNL_CFG_CMD_UNBIND = 2
NFQNL_COPY_META = 1
NFQA_PACKET_HDR = 1
NFQA_VERDICT_HDR = 2
NF_DROP = 0
NF_ACCEPT = 1


def _attr(atype, payload):
    ln = 4 + len(payload)
    pad = (4 - ln % 4) % 4
    return struct.pack("=HH", ln, atype) + payload + b"\0" * pad


class Queue:
    def __init__(self, num):
        self.num = num
        self.seq = 0
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind((0, 0))

    def _send(self, msg_type, attrs, family=socket.AF_UNSPEC, ack=False):
        self.seq += 1
        body = struct.pack("=BBH", family, 0, socket.htons(self.num)) + b"".join(attrs)
        flags = NLM_F_REQUEST | (NLM_F_ACK if ack else 0)
        hdr = struct.pack("=IHHII", 16 + len(body),
                          (NFNL_SUBSYS_QUEUE << 8) | msg_type, flags, self.seq, 0)
        self.sock.send(hdr + body)
        if ack:
            self._wait_ack(self.seq)

    def _wait_ack(self, seq):
        while True:
            data = self.sock.recv(65536)
            for mtype, mseq, payload in self._split(data):
                if mtype == NLMSG_ERROR and mseq == seq:
                    err = struct.unpack("=i", payload[:4])[0]
                    if err != 0:
                        raise OSError(-err, "nfqueue config: " + os.strerror(-err))
                    return

    @staticmethod
    def _split(data):
        off = 0
        while off + 16 <= len(data):
            ln, mtype, flags, seq, pid = struct.unpack_from("=IHHII", data, off)
            if ln < 16:
                break
            yield mtype, seq, data[off + 16:off + ln]
            off += (ln + 3) & ~3

    def bind(self):
        cmd = struct.pack("!BBH", NFQNL_CFG_CMD_BIND, 0, socket.AF_INET)
        self._send(NFQNL_MSG_CONFIG, [_attr(NFQA_CFG_CMD, cmd)], ack=True)
        params = struct.pack("!IB", 0, NFQNL_COPY_META)
        self._send(NFQNL_MSG_CONFIG, [_attr(NFQA_CFG_PARAMS, params)], ack=True)
        self._send(NFQNL_MSG_CONFIG, [_attr(NFQA_CFG_QUEUE_MAXLEN, struct.pack("!I", 65536))],
                   ack=True)
        # Accept (rather than drop) packets when our queue is full.
        self._send(NFQNL_MSG_CONFIG, [_attr(NFQA_CFG_FLAGS, struct.pack("!I", NFQA_CFG_F_FAIL_OPEN)),
                                      _attr(NFQA_CFG_MASK, struct.pack("!I", NFQA_CFG_F_FAIL_OPEN))],
                   ack=True)

    def unbind(self):
        cmd = struct.pack("!BBH", NFQNL_CFG_CMD_UNBIND, 0, socket.AF_INET)
        try:
            self._send(NFQNL_MSG_CONFIG, [_attr(NFQA_CFG_CMD, cmd)])
        except OSError:
            pass

    def verdict(self, packet_id, verdict):
        self._send(NFQNL_MSG_VERDICT, [_attr(NFQA_VERDICT_HDR, struct.pack("!II", verdict, packet_id))])

    def packets(self, data):
        """The packet ids in one recv() worth of netlink messages."""
        for mtype, seq, payload in self._split(data):
            if mtype != (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET:
                continue
            off = 4  # nfgenmsg
            while off + 4 <= len(payload):
                aln, atype = struct.unpack_from("=HH", payload, off)
                if aln < 4:
                    break
                if (atype & 0x3fff) == NFQA_PACKET_HDR:
                    yield struct.unpack_from("!I", payload, off + 4)[0]
                    break
                off += (aln + 3) & ~3


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--queue", type=int, required=True)
    ap.add_argument("--delay", type=float, default=0.0, help="ms")
    ap.add_argument("--jitter", type=float, default=0.0, help="ms, uniform +-")
    ap.add_argument("--loss", type=float, default=0.0, help="percent")
    ap.add_argument("--seed", type=int, default=None)
    a = ap.parse_args(argv)
    rng = random.Random(a.seed)
    q = Queue(a.queue)
    q.bind()
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    held = []  # heap of (release_monotonic, n, packet_id)
    n = 0
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    while not stop:
        now = time.monotonic()
        while held and held[0][0] <= now:
            _, _, pid = heapq.heappop(held)
            q.verdict(pid, NF_ACCEPT)
        timeout = max(0.0, held[0][0] - now) if held else 0.5
        try:
            r, _, _ = select.select([q.sock], [], [], timeout)
        except InterruptedError:
            continue
        if not r:
            continue
        try:
            data = q.sock.recv(1 << 18)
        except BlockingIOError:
            continue
        except OSError:  # ENOBUFS: the kernel dropped some notifications
            continue
        now = time.monotonic()
        for pid in q.packets(data):
            if a.loss > 0 and rng.random() * 100.0 < a.loss:
                q.verdict(pid, NF_DROP)
                continue
            d = a.delay + (rng.uniform(-a.jitter, a.jitter) if a.jitter > 0 else 0.0)
            if d <= 0:
                q.verdict(pid, NF_ACCEPT)
                continue
            n += 1
            heapq.heappush(held, (now + d / 1000.0, n, pid))
    for _, _, pid in held:
        q.verdict(pid, NF_ACCEPT)
    q.unbind()
    return 0


if __name__ == "__main__":
    sys.exit(main())
