"""Per-link TCP proxies between the members of a local cluster, for
network partitions.

Node i reaches node j only through the proxy of the directed link (i, j):
svcbus.cluster_nodes of node i names, for every other member j, the port
of that proxy (ProxiedCluster below); clients still connect to a node's own
port, as clients of a partitioned node do in a real network.  A partition
is a set of cut node pairs.  Cutting {i, j} stalls both links i->j and
j->i: bytes stop flowing in both directions of every connection on them
(the proxy stops reading, so TCP flow control pushes back on the sender),
and new connections are accepted but not forwarded.  That is what a
partition looks like to the members: requests that get no reply, then
their timeouts and reconnects, and, after healing, whatever the stalled
connections still carry.  Nothing is dropped or reordered within a
connection, like TCP.

The proxies run on an asyncio loop in a thread of the test process; every
listener is on 127.0.0.1.  partition() and heal() are thread-safe.
"""
import asyncio
import socket
import threading

from localcluster import LocalCluster


class LinkProxies:
    def __init__(self, n):
        self.n = n
        self.loop = asyncio.new_event_loop()
        self.open = {}          # frozenset({i, j}) -> asyncio.Event (set: connected)
        self.socks = {}         # (i, j) -> listening socket
        self.ports = {}
        self.target = {}        # j -> node j's real port (set by the cluster)
        for i in range(1, n + 1):
            for j in range(1, n + 1):
                if i == j:
                    continue
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("127.0.0.1", 0))
                s.listen(64)
                s.setblocking(False)
                self.socks[(i, j)] = s
                self.ports[(i, j)] = s.getsockname()[1]
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.started = threading.Event()
        self.servers = []

    # -- the loop ------------------------------------------------------------
    def _run(self):
        asyncio.set_event_loop(self.loop)
        for i in range(1, self.n + 1):
            for j in range(i + 1, self.n + 1):
                ev = asyncio.Event()
                ev.set()
                self.open[frozenset((i, j))] = ev
        for (i, j), s in self.socks.items():
            srv = self.loop.run_until_complete(asyncio.start_server(
                lambda r, w, i=i, j=j: self._conn(i, j, r, w), sock=s))
            self.servers.append(srv)
        self.started.set()
        self.loop.run_forever()

    async def _conn(self, i, j, reader, writer):
        ev = self.open[frozenset((i, j))]
        up_w = None
        try:
            await ev.wait()
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target[j])
            for w in (writer, up_w):
                w.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await asyncio.gather(self._pump(reader, up_w, ev), self._pump(up_r, writer, ev))
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            for w in (writer, up_w):
                if w is not None:
                    try:
                        w.close()
                    except Exception:
                        pass

    async def _pump(self, r, w, ev):
        try:
            while True:
                await ev.wait()
                data = await r.read(65536)
                if not data:
                    break
                await ev.wait()           # cut while the chunk was read: hold it
                w.write(data)
                await w.drain()
        except (OSError, ConnectionError):
            pass
        finally:
            try:
                w.close()
            except Exception:
                pass

    # -- control -------------------------------------------------------------
    def start(self):
        self.thread.start()
        self.started.wait(10)

    def _set(self, cut):
        for pair, ev in self.open.items():
            if pair in cut:
                ev.clear()
            else:
                ev.set()

    def partition(self, cut_pairs):
        """Cut exactly these node pairs (and heal every other)."""
        cut = {frozenset(p) for p in cut_pairs}
        done = threading.Event()

        def apply():
            self._set(cut)
            done.set()
        self.loop.call_soon_threadsafe(apply)
        done.wait(5)

    def heal(self):
        self.partition(())

    def stop(self):
        def shut():
            for s in self.servers:
                s.close()
            self.loop.stop()
        if self.thread.is_alive():
            self.loop.call_soon_threadsafe(shut)
            self.thread.join(5)


def components_cut(groups, n):
    """The pairs to cut so that nodes only reach the others of their own
    groups (groups may overlap: a node in two groups is a bridge)."""
    cut = set()
    for i in range(1, n + 1):
        for j in range(i + 1, n + 1):
            if not any(i in g and j in g for g in groups):
                cut.add(frozenset((i, j)))
    return cut


class ProxiedCluster(LocalCluster):
    """A LocalCluster whose members reach each other through LinkProxies."""

    def __init__(self, name, n=3, extra_conf=None, node_env=None):
        # the proxies' listeners are bound first, so the nodes' free ports
        # cannot be one of theirs
        self.proxies = LinkProxies(n)
        super().__init__(name, n, extra_conf)
        for j, p in enumerate(self.ports):
            self.proxies.target[j + 1] = p
        for i, node in enumerate(self.nodes):
            node.env.update((node_env or (lambda i: {}))(i + 1))

    def peer_port(self, i, j):
        return self.proxies.ports[(i, j)]

    def start(self):
        self.proxies.start()
        return super().start()

    def destroy(self):
        try:
            super().destroy()
        finally:
            self.proxies.stop()
