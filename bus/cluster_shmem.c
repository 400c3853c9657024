/*
 * bus/cluster_shmem.c
 *      Shared memory of the replicated bus on one node: membership parsed
 *      from svcbus.cluster_nodes, the published acceptor/learner state, the
 *      submission ring, clients' request slots and the registry's arena.
 *      Locking: see bus/cluster.h.
 *
 * Membership: svcbus.cluster_nodes = 'id=conninfo, id=conninfo, ...'
 * (ids 1..255, at most SVCBUS_CLUSTER_MAX_NODES; a conninfo cannot contain
 * a comma).  It is parsed once, in the postmaster, when shared memory is
 * created; a node whose svcbus.cluster_node_id is not listed is not a
 * member and says so in the log and in every cluster call.
 */
#include "postgres.h"

#include <ctype.h>

#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "utils/timestamp.h"

#include "bus/cluster.h"
#include "bus/cluster_snapshot.h"
#include "bus/locks.h"

int         svcbus_cluster_node_id = 0;
char       *svcbus_cluster_nodes = NULL;
int         svcbus_cluster_timeout_ms = 5000;
int         svcbus_cluster_election_timeout_ms = 1000;
int         svcbus_cluster_heartbeat_ms = 100;
int         svcbus_cluster_max_keys = 10000;
int         svcbus_cluster_memory_mb = 64;
int         svcbus_cluster_history = 10000;
int         svcbus_cluster_stale_limit_ms = 10000;
int         svcbus_cluster_snapshot_every = 10000;

static SvcbusClusterShared *cluster = NULL;

static bool
cluster_enabled(void)
{
    return svcbus_cluster_node_id > 0;
}

static void
registry_config(SvcbusRegConfig *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->max_keys = svcbus_cluster_max_keys;
    cfg->max_leases = Max(svcbus_cluster_max_keys / 4, 64);
    cfg->heap_bytes = (int64) svcbus_cluster_memory_mb * 1024 * 1024;
    cfg->history_max = svcbus_cluster_history;
}

int
svcbus_cluster_lock_reqs(void)
{
    return Min(svcbus_max_locks * 2, SVCBUS_LOCK_MAX_REQS);
}

static int
nreqs(void)
{
    return MaxBackends + 1;
}

Size
svcbus_cluster_shmem_size(void)
{
    SvcbusRegConfig cfg;
    Size        sz = MAXALIGN(sizeof(SvcbusClusterShared));

    if (!cluster_enabled())
        return sz;
    registry_config(&cfg);
    sz = add_size(sz, MAXALIGN(mul_size(nreqs(), sizeof(SvcbusClusterReq))));
    sz = add_size(sz, MAXALIGN(SVCBUS_CLUSTER_RING_BYTES));
    sz = add_size(sz, MAXALIGN(svcbus_reg_size(&cfg)));
    sz = add_size(sz, MAXALIGN(svcbus_clock_size(svcbus_max_locks, svcbus_cluster_lock_reqs())));
    return sz;
}

void
svcbus_cluster_shmem_request(void)
{
    RequestAddinShmemSpace(svcbus_cluster_shmem_size());
    RequestNamedLWLockTranche("svcbus_cluster", 2);
}

/* Parse svcbus.cluster_nodes into c->peers; false (with a LOG) if malformed. */
static bool
parse_members(SvcbusClusterShared *c, const char *spec)
{
    const char *p = spec ? spec : "";

    c->npeers = 0;
    while (*p)
    {
        const char *end = strchr(p, ',');
        size_t      n = end ? (size_t) (end - p) : strlen(p);
        char        item[SVCBUS_CLUSTER_CONNINFO_MAX + 16];
        char       *s = item;
        char       *eq;
        long        id;

        if (n >= sizeof(item))
        {
            elog(LOG, "svcbus: a member of svcbus.cluster_nodes is too long");
            return false;
        }
        memcpy(item, p, n);
        item[n] = '\0';
        while (isspace((unsigned char) *s))
            s++;
        if (*s != '\0')
        {
            eq = strchr(s, '=');
            id = strtol(s, NULL, 10);
            if (eq == NULL || id < 1 || id > 255 || c->npeers >= SVCBUS_CLUSTER_MAX_NODES)
            {
                elog(LOG, "svcbus: svcbus.cluster_nodes member \"%.40s\" is not \"id=conninfo\" with an id in 1..255 (at most %d members)",
                     s, SVCBUS_CLUSTER_MAX_NODES);
                return false;
            }
            for (int i = 0; i < c->npeers; i++)
                if (c->peers[i].id == id)
                {
                    elog(LOG, "svcbus: svcbus.cluster_nodes lists node %ld twice", id);
                    return false;
                }
            c->peers[c->npeers].id = (int32) id;
            strlcpy(c->peers[c->npeers].conninfo, eq + 1, SVCBUS_CLUSTER_CONNINFO_MAX);
            c->npeers++;
        }
        p += n;
        if (*p == ',')
            p++;
    }
    return c->npeers > 0;
}

void
svcbus_cluster_shmem_init(void)
{
    bool        found;
    Size        sz = svcbus_cluster_shmem_size();

    cluster = ShmemInitStruct("svcbus_cluster", sz, &found);
    if (found)
        return;
    memset(cluster, 0, sizeof(SvcbusClusterShared));
    cluster->lock = &(GetNamedLWLockTranche("svcbus_cluster"))[0].lock;
    cluster->sm_lock = &(GetNamedLWLockTranche("svcbus_cluster"))[1].lock;
    SpinLockInit(&cluster->ring_mutex);
    ConditionVariableInit(&cluster->applied_cv);
    cluster->worker_procno = -1;
    cluster->applied_digest = SVCBUS_DIGEST_INIT;
    cluster->role = SVCBUS_ROLE_OFF;
    if (!cluster_enabled())
        return;

    if (parse_members(cluster, svcbus_cluster_nodes))
    {
        for (int i = 0; i < cluster->npeers; i++)
            if (cluster->peers[i].id == svcbus_cluster_node_id)
                cluster->me = svcbus_cluster_node_id;
        if (cluster->me == 0)
            elog(LOG, "svcbus: svcbus.cluster_node_id %d is not listed in svcbus.cluster_nodes: this server is not a cluster member",
                 svcbus_cluster_node_id);
    }
    if (cluster->me != 0)
    {
        SvcbusRegConfig cfg;
        Size        off = MAXALIGN(sizeof(SvcbusClusterShared));

        cluster->role = SVCBUS_ROLE_FOLLOWER;
        cluster->nreqs = nreqs();
        cluster->reqs_off = off;
        memset((char *) cluster + off, 0, mul_size(nreqs(), sizeof(SvcbusClusterReq)));
        /*
         * Request numbers start at random: commands of an earlier life of
         * this node (before a crash restart) may still be chosen and
         * applied later, and must not match a new request of the same slot.
         */
        for (int i = 0; i < nreqs(); i++)
        {
            SvcbusClusterReq *r = (SvcbusClusterReq *) ((char *) cluster + off) + i;

            if (!pg_strong_random(&r->seq, sizeof(r->seq)))
                r->seq = (uint64) GetCurrentTimestamp() * 1000 + i;
            r->seq &= UINT64CONST(0x7fffffffffffffff);
        }
        off += MAXALIGN(mul_size(nreqs(), sizeof(SvcbusClusterReq)));
        cluster->ring_off = off;
        off += MAXALIGN(SVCBUS_CLUSTER_RING_BYTES);
        cluster->registry_off = off;
        registry_config(&cfg);
        (void) svcbus_reg_init((char *) cluster + off, &cfg);
        off += MAXALIGN(svcbus_reg_size(&cfg));
        cluster->locks_off = off;
        (void) svcbus_clock_init((char *) cluster + off, svcbus_max_locks, svcbus_cluster_lock_reqs());
    }
}

/* The shared area (NULL before shared memory exists). */
SvcbusClusterShared *
svcbus_cluster(void)
{
    return cluster;
}

SvcbusClusterReq *
svcbus_cluster_reqs(void)
{
    return (SvcbusClusterReq *) ((char *) cluster + cluster->reqs_off);
}

SvcbusReg *
svcbus_cluster_registry(void)
{
    return (SvcbusReg *) ((char *) cluster + cluster->registry_off);
}

SvcbusClock *
svcbus_cluster_locks(void)
{
    return (SvcbusClock *) ((char *) cluster + cluster->locks_off);
}

static uint8 *
ring(void)
{
    return (uint8 *) cluster + cluster->ring_off;
}

static void
ring_write(uint64 pos, const uint8 *src, size_t n)
{
    size_t      at = (size_t) (pos % SVCBUS_CLUSTER_RING_BYTES);
    size_t      first = Min(n, SVCBUS_CLUSTER_RING_BYTES - at);

    memcpy(ring() + at, src, first);
    if (first < n)
        memcpy(ring(), src + first, n - first);
}

static void
ring_read(uint64 pos, uint8 *dst, size_t n)
{
    size_t      at = (size_t) (pos % SVCBUS_CLUSTER_RING_BYTES);
    size_t      first = Min(n, SVCBUS_CLUSTER_RING_BYTES - at);

    memcpy(dst, ring() + at, first);
    if (first < n)
        memcpy(dst + first, ring(), n - first);
}

/*
 * Append one encoded envelope to the submission ring.  false: no room
 * (the caller reports back-pressure).  Wakes nobody: see wake_worker.
 */
bool
svcbus_cluster_ring_put(const uint8 *env, size_t len)
{
    bool        ok = false;

    SpinLockAcquire(&cluster->ring_mutex);
    if (cluster->ring_head - cluster->ring_tail + len <= SVCBUS_CLUSTER_RING_BYTES)
    {
        ring_write(cluster->ring_head, env, len);
        cluster->ring_head += len;
        ok = true;
    }
    SpinLockRelease(&cluster->ring_mutex);
    return ok;
}

/*
 * Take whole envelopes from the ring into buf, up to cap bytes (at least
 * one if any is queued and it fits).  Returns bytes taken, *count envelopes.
 */
size_t
svcbus_cluster_ring_take(uint8 *buf, size_t cap, int *count)
{
    size_t      taken = 0;

    *count = 0;
    SpinLockAcquire(&cluster->ring_mutex);
    while (cluster->ring_tail < cluster->ring_head)
    {
        uint8       hdr[SVCBUS_ENVELOPE_HEADER];
        uint32      plen;
        size_t      sz;

        ring_read(cluster->ring_tail, hdr, sizeof(hdr));
        plen = (uint32) hdr[0] | ((uint32) hdr[1] << 8) | ((uint32) hdr[2] << 16) |
            ((uint32) hdr[3] << 24);
        sz = SVCBUS_ENVELOPE_HEADER + plen;
        if (taken + sz > cap)
            break;
        ring_read(cluster->ring_tail, buf + taken, sz);
        cluster->ring_tail += sz;
        taken += sz;
        (*count)++;
    }
    SpinLockRelease(&cluster->ring_mutex);
    return taken;
}

/* Set the paxos worker's latch (new work in the ring, or a reader waits). */
void
svcbus_cluster_wake_worker(void)
{
    int         procno;

    LWLockAcquire(cluster->lock, LW_SHARED);
    procno = cluster->worker_procno;
    LWLockRelease(cluster->lock);
    if (procno >= 0)
        SetLatch(&ProcGlobal->allProcs[procno].procLatch);
}

const char *
svcbus_cluster_role_name(int role)
{
    switch (role)
    {
        case SVCBUS_ROLE_FOLLOWER:
            return "follower";
        case SVCBUS_ROLE_CANDIDATE:
            return "candidate";
        case SVCBUS_ROLE_LEADER:
            return "leader";
        case SVCBUS_ROLE_RECOVERING:
            return "recovering";
        default:
            return "off";
    }
}

int
svcbus_cluster_state_areas(SvcbusSnapArea *areas, bool templates)
{
    SvcbusRegConfig cfg;
    size_t      clock_size = svcbus_clock_size(svcbus_max_locks, svcbus_cluster_lock_reqs());

    registry_config(&cfg);
    areas[0].base = (uint8 *) cluster + cluster->registry_off;
    areas[0].size = svcbus_reg_size(&cfg);
    areas[0].tmpl = NULL;
    areas[1].base = (uint8 *) cluster + cluster->locks_off;
    areas[1].size = clock_size;
    areas[1].tmpl = NULL;
    if (templates)
    {
        void       *r = palloc_extended(MAXALIGN(areas[0].size), MCXT_ALLOC_HUGE);
        void       *l = palloc_extended(MAXALIGN(areas[1].size), MCXT_ALLOC_HUGE);

        (void) svcbus_reg_init(r, &cfg);
        (void) svcbus_clock_init(l, svcbus_max_locks, svcbus_cluster_lock_reqs());
        areas[0].tmpl = r;
        areas[1].tmpl = l;
    }
    return 2;
}

void
svcbus_cluster_free_templates(SvcbusSnapArea *areas, int n)
{
    for (int i = 0; i < n; i++)
        if (areas[i].tmpl)
        {
            pfree((void *) areas[i].tmpl);
            areas[i].tmpl = NULL;
        }
}

void
svcbus_cluster_state_reset(void)
{
    SvcbusRegConfig cfg;

    registry_config(&cfg);
    (void) svcbus_reg_init((char *) cluster + cluster->registry_off, &cfg);
    (void) svcbus_clock_init((char *) cluster + cluster->locks_off, svcbus_max_locks, svcbus_cluster_lock_reqs());
}
