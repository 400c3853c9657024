"""A small N-node svcbus cluster on 127.0.0.1 (no network namespaces).

For tests that need real members but no network faults: SQL behaviour,
kill -9 and restarts, log agreement.  Partition tests put linkproxy.py between the members.
Every process is started and stopped by the single-node harness
(test/harness/svcbus_harness.py), by PID.
"""
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "harness"))
from svcbus_harness import Cluster, _alive, free_port, wait_for  # noqa: E402


class LocalCluster:
    def __init__(self, name, n=3, extra_conf=None):
        self.ports = [free_port() for _ in range(n)]
        self.nodes = []
        for i in range(n):
            conf = {
                "svcbus.cluster_node_id": str(i + 1),
                "svcbus.cluster_nodes": "'%s'" % self.member_spec(i + 1),
                "svcbus.restart_backoff_min": "100ms",
                "svcbus.restart_backoff_max": "500ms",
                "fsync": "on",
                "synchronous_commit": "on",
            }
            conf.update(extra_conf or {})
            self.nodes.append(Cluster("%s-n%d" % (name, i + 1), port=self.ports[i], extra_conf=conf))

    def peer_port(self, i, j):
        """The port node i reaches node j on (here: j's own port)."""
        return self.ports[j - 1]

    def member_spec(self, i):
        """svcbus.cluster_nodes of node i: every member, i itself included."""
        return ", ".join("%d=host=127.0.0.1 port=%d user=postgres"
                         % (j, self.ports[j - 1] if j == i else self.peer_port(i, j))
                         for j in range(1, len(self.ports) + 1))

    def start(self):
        for c in self.nodes:
            c.start()
        self.wait_leader()
        return self

    def node(self, i):
        return self.nodes[i - 1]

    def leader(self):
        for i, c in enumerate(self.nodes):
            try:
                r = c.execute("SELECT role FROM svcbus.cluster WHERE self")
            except Exception:
                continue
            if r and r[0][0] == "leader":
                return i + 1
        return None

    def wait_leader(self, timeout=30):
        return wait_for(self.leader, timeout=timeout, what="a cluster leader")

    def wait_voting(self, timeout=60):
        """Wait until no member is recovering from lost state."""
        def voting():
            for c in self.nodes:
                try:
                    r = c.execute("SELECT role FROM svcbus.cluster WHERE self")
                except Exception:
                    return False
                if not r or r[0][0] == "recovering":
                    return False
            return True
        return wait_for(voting, timeout=timeout, what="every member to vote again")

    def follower(self):
        lead = self.wait_leader()
        return 1 if lead != 1 else 2

    def digests(self, ids=None):
        out = {}
        for i in ids or range(1, len(self.nodes) + 1):
            out[i] = tuple(self.node(i).execute("SELECT * FROM svcbus.cluster_digest()")[0])
        return out

    def wait_agree(self, ids=None, timeout=20):
        """Wait until the given nodes applied the same log (same digest)."""
        def same():
            d = self.digests(ids)
            return d if len(set(d.values())) == 1 else None
        return wait_for(same, timeout=timeout, what="nodes to agree")

    def destroy(self):
        for c in self.nodes:
            c.destroy()


def _tree(pid):
    """pid and all its descendants."""
    from svcbus_harness import _children_of
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(_children_of(p))
    return out


class ProcessFaults:
    """kill -9, restart, SIGSTOP/SIGCONT of the members of a LocalCluster."""

    def __init__(self, lc):
        self.lc = lc
        self.stopped = {}
        self.lost = []          # (kind, node): nodes whose data was restored or emptied

    def restart_old_copy(self, i, window):
        """kill -9 node i, copy its data directory, restart it, let the
        cluster go on for `window` seconds, kill -9 it again and restart it
        from the old copy: it has forgotten what it acknowledged since."""
        node = self.lc.node(i)
        copy = os.path.join(node.dir, "old-copy")
        self.kill9(i)
        node.copy_data(copy)
        self.start(i)
        time.sleep(window)
        self.kill9(i)
        node.restore_data(copy)
        self.start(i)
        self.lost.append(("restart-old-copy", i))

    def restart_empty(self, i):
        """kill -9 node i and start it on a new, empty data directory."""
        self.kill9(i)
        self.lc.node(i).recreate()
        self.lost.append(("restart-empty", i))

    def kill9(self, i):
        node = self.lc.node(i)
        try:
            node.kill9_postmaster()
        except (OSError, ValueError):
            pass

    def start(self, i):
        """Bring node i up unless its postmaster still runs.

        A live postmaster that refuses connections is in crash recovery
        (say after a backend crashed): wait for it, never start a second
        one on the same data directory.
        """
        node = self.lc.node(i)
        try:
            pid = node.postmaster_pid()
        except (OSError, ValueError):
            pid = None
        if pid is not None and _alive(pid):
            def up():
                try:
                    node.execute("SELECT 1")
                    return True
                except Exception:
                    return not _alive(pid) and "gone"
            if wait_for(up, timeout=60, what="node %d to finish recovery" % i) is True:
                return
            wait_for(lambda: not os.path.exists("/proc/%d" % pid), timeout=20,
                     what="postmaster reaped")
        node.start()

    def sigstop(self, i):
        import signal
        pids = _tree(self.lc.node(i).postmaster_pid())
        for p in pids:
            try:
                os.kill(p, signal.SIGSTOP)
            except OSError:
                pass
        self.stopped[i] = pids

    def sigcont(self, i):
        import signal
        for p in self.stopped.pop(i, []):
            try:
                os.kill(p, signal.SIGCONT)
            except OSError:
                pass

    def heal(self):
        for i in list(self.stopped):
            self.sigcont(i)
        for i in range(1, len(self.lc.nodes) + 1):
            self.start(i)
