/*
 * bgworkers/paxos_worker.c
 *      One per cluster node: the Multi-Paxos proposer (candidate, leader),
 *      the forwarder of clients' commands to the leader, and the learner
 *      that applies the chosen log to the replicated state machines.
 *      The protocol is bus/README-paxos.md; the acceptor it talks to is
 *      extension/cluster_acceptor.c, reached over libpq on every member
 *      (this node included).
 *
 * Shape: one event loop.  Each pass: drive the peer connections (async
 * libpq in pipeline mode, never blocking), act on the role, apply what is
 * chosen, then wait on the latch and the sockets.  State that backends see
 * is published in the cluster's shared memory (bus/cluster.h) under its
 * lock.  An ERROR ends the process; the launcher restarts it and it
 * resumes from the durable acceptor tables and the shared memory.
 *
 * What this process keeps only in memory (lost on restart, rebuilt by the
 * protocol): the role and ballot, the leader's proposals not yet chosen
 * (a new leader recovers them in phase 1), next/match per peer, and a
 * recovery in progress (it starts over with a new ballot).
 */
#include "postgres.h"

#include <time.h>

#include "access/xact.h"
#include "access/xlog.h"
#include "commands/async.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "libpq-fe.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "bus/cluster.h"
#include "bus/cluster_snapshot.h"
#include "extension/cluster_api.h"
#include "extension/svcbus.h"

PGDLLEXPORT void svcbus_paxos_worker_main(Datum main_arg);

#define MAX_INFLIGHT        8           /* pipelined requests per peer */
#define MAX_ACCEPT_BYTES    (1024 * 1024)   /* entries per accept message */
#define MAX_BATCH_BYTES     (512 * 1024)
#define MAX_BATCH_CMDS      4096
#define MAX_OPEN_BATCHES    4           /* proposed, not yet chosen */
#define CONNECT_TIMEOUT_MS  2000
#define REQUEST_TIMEOUT_MS  3000
#define RECONNECT_MS        200
#define APPLY_CHUNK         256
#define RECOVER_WINDOW      4096        /* slots per recovery read (and at most ... */
#define RECOVER_BYTES       (8 * 1024 * 1024)   /* ... bytes of values per reply) */
#define SAVE_SEEN_MS        1000        /* how often what we saw of peers is saved */

typedef enum ReqKind
{
    REQ_PREPARE = 1,
    REQ_ACCEPT,
    REQ_FORWARD,
    REQ_RECOVER,
    REQ_SNAPSHOT,
    REQ_READ_INDEX
} ReqKind;

/* Reply states of prepare and accept (extension/cluster_acceptor.c). */
#define ID_OK           0
#define ID_RECOVERING   1           /* the peer does not vote */
#define ID_CALLER_LOST  2           /* the peer saw a later state of this node */
#define ID_TRUNCATED    3           /* prepare: the slots asked for are truncated there */

#define SNAPSHOT_ASK_MS     10000       /* a snapshot request outstanding at most this long */
#define STUCK_MS            1000        /* no apply progress below the commit index: ask for a snapshot */

typedef struct Outstanding
{
    ReqKind     kind;
    int64       ballot;
    int64       last_slot;          /* accept: highest slot sent, 0 for heartbeat */
    uint64      seq;                /* per-peer send counter */
    uint64      gseq;               /* this process's send counter (read indexes) */
    TimestampTz sent_at;
    bool        have_result;
    bool        failed;
    bool        ok;
    int64       promised;
    int64       match;
    int         forwarded;          /* forward: reply value */
    int         state;              /* prepare/accept: ID_* */
    int64       sysid;              /* prepare/accept: the peer's identity */
    int64       inc;                /* (recover: its latest incarnation of us) */
    int64       lsn;
    int64       you[3];             /* what the peer saw of us: sysid, inc, lsn */
    int64       max_slot;           /* recover: the peer's highest slot; snapshot: its slot */
    int64       upto;               /* recover: last slot the reply covers */
    int64       truncated;          /* recover: the peer's log starts after it */
    int64       snap_time;          /* snapshot: cluster time and digest at its slot */
    int64       snap_digest;
    char       *entries;            /* prepare: raw bytes (palloc'd in TopMemoryContext) */
    size_t      entries_len;
} Outstanding;

typedef enum ConnState
{
    CONN_DOWN = 0,
    CONN_CONNECTING,
    CONN_READY
} ConnState;

typedef struct Peer
{
    int         id;
    char       *conninfo;
    PGconn     *conn;
    ConnState   state;
    TimestampTz state_since;
    TimestampTz retry_at;
    TimestampTz last_send;
    TimestampTz last_reply;
    bool        want_write;
    Outstanding q[MAX_INFLIGHT];
    int         qhead;
    int         qlen;
    uint64      send_seq;
    uint64      rewind_seq;         /* ignore gap replies of requests before this */
    /* leader */
    int64       next;
    int64       match;
    bool        match_known;
    int64       commit_sent;        /* commit index last sent to it */
    uint64      ack_gseq;           /* latest send it acknowledged in my ballot */
    uint64      last_gsend;         /* gseq of the latest send to it */
    /* candidate */
    bool        promised;
    /* recovering: this window asked / answered */
    bool        rec_asked;
    bool        rec_done;
} Peer;

/* Leader's proposals: slots (mem_lo .. last], values by slot - mem_lo - 1. */
typedef struct Proposal
{
    char       *data;
    size_t      len;
} Proposal;

static Peer peers[SVCBUS_CLUSTER_MAX_NODES];
static int  npeers;
static int  me;
static int  quorum;
static SvcbusClusterShared *cs;
static MemoryContext loop_cxt = NULL;   /* allocations of one loop pass */

static int  role = SVCBUS_ROLE_FOLLOWER;
static int64 my_ballot = 0;
static int64 max_round = 0;
static TimestampTz election_deadline = 0;
static TimestampTz leader_quorum_at = 0;    /* last time a quorum answered the leader */

/* candidate */
static int64 prep_from = 0;
static int  npromises = 0;
typedef struct Recovered
{
    int64       slot;
    int64       ballot;
    char       *data;
    size_t      len;
} Recovered;
static Recovered *recovered = NULL;
static int  nrecovered = 0;
static int  recovered_cap = 0;
/* recovered[] by slot: rec_index[slot - rec_base] = i + 1 (0: none) */
static int64 rec_base = 0;
static int *rec_index = NULL;
static int64 rec_index_cap = 0;
static int64 rec_index_hi = 0;      /* offsets in use are below it */

/* leader */
static Proposal *props = NULL;
static int  props_cap = 0;
static int64 mem_lo = 0;            /* slots <= mem_lo are not in props */
static int64 last_slot = 0;         /* highest slot proposed */
static int64 commit_idx = 0;
static int64 base_time = 0;         /* cluster time at takeover (ms) */
static int64 takeover_mono = 0;     /* CLOCK_MONOTONIC at takeover (ms) */
static int64 last_time = 0;         /* time stamped on the last batch */
static TimestampTz last_noop = 0;

/* follower: commands taken from the ring, not yet forwarded */
static StringInfoData fwd;
static int  fwd_count = 0;
static TimestampTz fwd_since = 0;
static bool fwd_inflight = false;

/* counters for svcbus.workers */
static int64 n_batches = 0;
static int64 n_commands = 0;
static int64 n_forwarded = 0;
static int64 n_forward_dropped = 0;     /* forwards lost with their connection */
static int64 n_elections = 0;
static int64 n_recoveries = 0;

/* recovering: the window of slots being read from every other member */
static bool rec_active = false;
static int64 rec_from = 0;
static int64 rec_target = -1;       /* highest slot any member had when asked first */
static int64 rec_window_max = 0;
static int64 rec_window_end = 0;    /* lowest slot every answer of the window covers */
static int64 rec_ballot = 0;        /* the recovery's own phase-1 ballot */
static int64 rec_label_max = 0;     /* highest ballot among the values read */
static int64 rec_inc = 0;           /* highest incarnation of ours any member saw */
static TimestampTz rec_started = 0;
static TimestampTz seen_saved_at = 0;
static int  rec_snap_peer = 0;      /* a member whose log starts after rec_from */
static int64 rec_snap_trunc = 0;
static bool rec_snap_wait = false;  /* recovery waits for that member's snapshot */

/* snapshots (bus/README-paxos.md, "Snapshots") */
static int64 snap_slot = 0;         /* our latest snapshot's slot */
static int64 log_truncated = 0;     /* our log holds no slot at or below it */
static int64 n_snapshots = 0;
static int64 n_installs = 0;
static bool snap_pending = false;   /* a REQ_SNAPSHOT is outstanding */
static TimestampTz snap_asked_at = 0;
static int64 progress_applied = -1; /* stuck detection */
static TimestampTz progress_at = 0;

/*
 * Reads (bus/README-paxos.md, "Reads"): per request slot, the read we
 * track (its seq), its phase, and the send counter when we took it.
 */
#define READ_NONE   0
#define READ_TAKEN  1               /* waiting for a confirmation round after take */
#define READ_SENT   2               /* follower: in the read-index call to the leader */
static uint64 gsend = 0;            /* sends so far (any peer) */
static uint64 *read_seq = NULL;
static uint64 *read_take = NULL;
static uint8 *read_phase = NULL;
static int  reads_open = 0;
static uint64 reads_seen = 0;       /* cs->read_requests when last scanned */
static bool read_rpc_inflight = false;
static int64 takeover_max = 0;      /* leader: highest slot re-proposed at takeover */
static int64 n_read_rounds = 0;

static int64
mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int
random_election_ms(void)
{
    int         t = svcbus_cluster_election_timeout_ms;

    return t + (int) (random() % (t + 1));
}

static void
publish_role(void)
{
    LWLockAcquire(cs->lock, LW_EXCLUSIVE);
    cs->role = role;
    cs->ballot = my_ballot;
    if (role == SVCBUS_ROLE_LEADER)
        cs->leader = me;
    cs->elections = n_elections;
    cs->batches = n_batches;
    cs->commands = n_commands;
    cs->forwarded = n_forwarded;
    for (int i = 0; i < npeers; i++)
    {
        cs->peers[i].connected = (peers[i].state == CONN_READY);
        cs->peers[i].match = (role == SVCBUS_ROLE_LEADER && peers[i].match_known) ? peers[i].match : -1;
        cs->peers[i].last_reply = peers[i].last_reply;
    }
    LWLockRelease(cs->lock);
}

static void
update_detail(void)
{
    char        buf[SVCBUS_ERRMSG_LEN];
    int64       applied;
    int64       commit;

    LWLockAcquire(cs->lock, LW_SHARED);
    applied = cs->applied;
    commit = cs->commit;
    LWLockRelease(cs->lock);
    snprintf(buf, sizeof(buf),
             "%s, ballot %lld, commit %lld, applied %lld, batches %lld, commands %lld, forwarded %lld (%lld lost with a connection), read indexes %lld, elections %lld, recoveries %lld, snapshot at %lld (log from %lld), snapshots %lld, installed %lld",
             svcbus_cluster_role_name(role), (long long) my_ballot, (long long) commit,
             (long long) applied, (long long) n_batches, (long long) n_commands,
             (long long) n_forwarded, (long long) n_forward_dropped, (long long) n_read_rounds,
             (long long) n_elections, (long long) n_recoveries, (long long) snap_slot, (long long) log_truncated + 1,
             (long long) n_snapshots, (long long) n_installs);
    if (role == SVCBUS_ROLE_RECOVERING && rec_active)
        snprintf(buf + strlen(buf), sizeof(buf) - strlen(buf), "; reading slot %lld of %lld from the others",
                 (long long) rec_from, (long long) rec_target);
    svcbus_worker_set_detail(buf);
}

static void reads_unsend(void);

/* The leader this node heard from within an election timeout, 0 if none.  cs->lock held. */
static int
known_leader(TimestampTz now)
{
    return (cs->leader_ballot > 0 &&
            !TimestampDifferenceExceeds(cs->last_contact, now, svcbus_cluster_election_timeout_ms))
        ? (int) (cs->leader_ballot % 256) : 0;
}

/* ---------------------------------------------------------------------
 * Connections
 */

static void
peer_drop(Peer *p, const char *why)
{
    if (p->conn)
    {
        if (p->state == CONN_READY)
            elog(DEBUG1, "svcbus paxos: connection to node %d dropped: %s", p->id, why);
        PQfinish(p->conn);
    }
    p->conn = NULL;
    p->state = CONN_DOWN;
    p->retry_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), RECONNECT_MS);
    for (int i = 0; i < p->qlen; i++)
    {
        Outstanding *o = &p->q[(p->qhead + i) % MAX_INFLIGHT];

        if (o->kind == REQ_FORWARD)
        {
            /*
             * The forward may or may not have landed (the leader may have
             * queued it and its reply got lost, or it may still arrive over
             * a stalled connection).  Sending it again could apply its
             * commands twice (found by the partition test: a write applied
             * a second time after later writes).  Drop it: its clients get
             * "outcome unknown" (SB202) when their wait ends, which is what
             * happened.  At most once, never twice.
             */
            fwd_inflight = false;
            resetStringInfo(&fwd);
            fwd_count = 0;
            n_forward_dropped++;
        }
        if (o->kind == REQ_RECOVER && o->last_slot == rec_from)
            p->rec_asked = false;   /* ask again when it is back */
        if (o->kind == REQ_SNAPSHOT)
            snap_pending = false;
        if (o->kind == REQ_READ_INDEX)
            reads_unsend();
        if (o->entries)
            pfree(o->entries);
        o->entries = NULL;
    }
    p->qlen = 0;
    p->qhead = 0;
    p->want_write = false;
    p->match_known = false;
}

static void
peer_connect(Peer *p, TimestampTz now)
{
    char       *ci;

    if (p->state != CONN_DOWN || now < p->retry_at)
        return;
    ci = psprintf("dbname='%s' application_name='svcbus paxos %d' %s",
                  svcbus_database, me, p->conninfo);
    p->conn = PQconnectStart(ci);
    pfree(ci);
    if (p->conn == NULL || PQstatus(p->conn) == CONNECTION_BAD)
    {
        peer_drop(p, "connect failed");
        return;
    }
    p->state = CONN_CONNECTING;
    p->state_since = now;
    p->want_write = true;
}

static void
peer_poll_connect(Peer *p, TimestampTz now)
{
    PostgresPollingStatusType st;

    if (p->state != CONN_CONNECTING)
        return;
    st = PQconnectPoll(p->conn);
    if (st == PGRES_POLLING_FAILED)
    {
        peer_drop(p, PQerrorMessage(p->conn));
        return;
    }
    if (st == PGRES_POLLING_OK)
    {
        if (PQsetnonblocking(p->conn, 1) != 0 || PQenterPipelineMode(p->conn) != 1)
        {
            peer_drop(p, "could not enter pipeline mode");
            return;
        }
        p->state = CONN_READY;
        p->state_since = now;
        p->want_write = false;
        p->last_reply = now;
        return;
    }
    p->want_write = (st == PGRES_POLLING_WRITING);
    if (TimestampDifferenceExceeds(p->state_since, now, CONNECT_TIMEOUT_MS))
        peer_drop(p, "connect timed out");
}

static Outstanding *
peer_push(Peer *p, ReqKind kind, int64 ballot, int64 last, TimestampTz now)
{
    Outstanding *o = &p->q[(p->qhead + p->qlen) % MAX_INFLIGHT];

    memset(o, 0, sizeof(*o));
    o->kind = kind;
    o->ballot = ballot;
    o->last_slot = last;
    o->seq = ++p->send_seq;
    o->gseq = ++gsend;
    p->last_gsend = o->gseq;
    o->sent_at = now;
    p->qlen++;
    p->last_send = now;
    return o;
}

static bool
peer_can_send(Peer *p)
{
    return p->state == CONN_READY && p->qlen < MAX_INFLIGHT;
}

/* Send one call; false (and the connection dropped) on failure. */
static bool
peer_send(Peer *p, const char *sql, int nparams, const char *const *values,
          const int *lengths, const int *formats)
{
    if (PQsendQueryParams(p->conn, sql, nparams, NULL, values, lengths, formats, 0) != 1 ||
        PQpipelineSync(p->conn) != 1)
    {
        peer_drop(p, PQerrorMessage(p->conn));
        return false;
    }
    p->want_write = (PQflush(p->conn) == 1);
    return true;
}

static void
put_le(StringInfo b, uint64 v, int n)
{
    for (int i = 0; i < n; i++)
        appendStringInfoChar(b, (char) (uint8) (v >> (8 * i)));
}

static int64
get_le64(const uint8 *p)
{
    uint64      v = 0;

    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return (int64) v;
}

/*
 * The identity arguments of prepare and accept: this node's system
 * identifier, incarnation and durable WAL position, and what it saw of p's
 * (nothing of itself).
 */
typedef struct IdentArgs
{
    char        v[6][32];
} IdentArgs;

static void
ident_args(Peer *p, IdentArgs *a)
{
    int64       sysid, lsn, inc, seen_sysid = 0, seen_inc = 0, seen_lsn = 0;
    int         i = svcbus_paxos_peer_index(cs, p->id);

    svcbus_paxos_identity(&sysid, &lsn);
    LWLockAcquire(cs->lock, LW_SHARED);
    inc = cs->incarnation;
    if (p->id != me && i >= 0)
    {
        seen_sysid = cs->peers[i].seen_sysid;
        seen_inc = cs->peers[i].seen_inc;
        seen_lsn = cs->peers[i].seen_lsn;
    }
    LWLockRelease(cs->lock);
    snprintf(a->v[0], 32, INT64_FORMAT, sysid);
    snprintf(a->v[1], 32, INT64_FORMAT, inc);
    snprintf(a->v[2], 32, INT64_FORMAT, lsn);
    snprintf(a->v[3], 32, INT64_FORMAT, seen_sysid);
    snprintf(a->v[4], 32, INT64_FORMAT, seen_inc);
    snprintf(a->v[5], 32, INT64_FORMAT, seen_lsn);
}

static void
send_prepare(Peer *p, TimestampTz now)
{
    char        b[32], f[32];
    IdentArgs   id;
    const char *vals[8] = {b, f, id.v[0], id.v[1], id.v[2], id.v[3], id.v[4], id.v[5]};

    ident_args(p, &id);
    snprintf(b, sizeof(b), INT64_FORMAT, my_ballot);
    snprintf(f, sizeof(f), INT64_FORMAT, prep_from);
    if (peer_send(p, "SELECT ok, promised, match, entries, state, sysid, inc, lsn,"
                  " your_sysid, your_inc, your_lsn"
                  " FROM svcbus._paxos_prepare($1, $2, $3, $4, $5, $6, $7, $8)",
                  8, vals, NULL, NULL))
        peer_push(p, REQ_PREPARE, my_ballot, 0, now);
}

/* Recovering: ask p for its promise and accepted values in the window. */
static void
send_recover(Peer *p, TimestampTz now)
{
    char        b[32], f[32], t[32], m[32], c[32];
    const char *vals[6] = {b, f, t, m, rec_target < 0 ? "true" : "false", c};

    snprintf(b, sizeof(b), INT64_FORMAT, rec_ballot);
    snprintf(f, sizeof(f), INT64_FORMAT, rec_from);
    snprintf(t, sizeof(t), INT64_FORMAT, rec_from + RECOVER_WINDOW - 1);
    snprintf(m, sizeof(m), "%d", me);
    snprintf(c, sizeof(c), "%d", RECOVER_BYTES);
    if (peer_send(p, "SELECT ok, promised, max_slot, entries, seen_inc, upto, truncated"
                  " FROM svcbus._paxos_recover($1, $2, $3, $4, $5, $6)",
                  6, vals, NULL, NULL))
    {
        peer_push(p, REQ_RECOVER, rec_ballot, rec_from, now);
        p->rec_asked = true;
    }
}

/* Fill `entries` with slots from..to read from this node's own log table. */
static int64
read_own_log(int64 from, int64 to, StringInfo entries, size_t cap)
{
    Oid         types[2] = {INT8OID, INT8OID};
    Datum       vals[2] = {Int64GetDatum(from), Int64GetDatum(to)};
    int64       last = from - 1;

    StartTransactionCommand();
    PushActiveSnapshot(GetTransactionSnapshot());
    SPI_connect();
    if (SPI_execute_with_args("SELECT slot, value FROM svcbus_internal.paxos_log"
                              " WHERE slot BETWEEN $1 AND $2 ORDER BY slot",
                              2, types, vals, NULL, true, 0) != SPI_OK_SELECT)
        elog(ERROR, "svcbus paxos: could not read the log");
    for (uint64 i = 0; i < SPI_processed; i++)
    {
        bool        isnull;
        int64       slot = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull));
        bytea      *v = DatumGetByteaPP(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2, &isnull));
        size_t      len = VARSIZE_ANY_EXHDR(v);

        if (slot != last + 1 || (entries->len > 0 && entries->len + len > cap))
            break;
        put_le(entries, (uint64) slot, 8);
        put_le(entries, 0, 8);
        put_le(entries, len, 4);
        appendBinaryStringInfo(entries, VARDATA_ANY(v), len);
        last = slot;
    }
    SPI_finish();
    PopActiveSnapshot();
    CommitTransactionCommand();
    MemoryContextSwitchTo(loop_cxt);
    return last;
}

/* Send accept(b, entries next.., commit) to p, or a heartbeat if none. */
static void
send_accept(Peer *p, TimestampTz now, bool heartbeat_only)
{
    StringInfoData entries;
    char        b[32], c[32];
    IdentArgs   id;
    const char *vals[9];
    int         lens[9] = {0, 0, 0, 0, 0, 0, 0, 0, 0};
    int         fmts[9] = {0, 1, 0, 0, 0, 0, 0, 0, 0};
    int64       upto = p->next - 1;

    initStringInfo(&entries);
    if (!heartbeat_only && p->next <= last_slot)
    {
        int64       s = p->next;

        if (s <= mem_lo)
        {
            /* Older than the leader's proposals: from its own log. */
            upto = read_own_log(s, Min(mem_lo, last_slot), &entries, MAX_ACCEPT_BYTES);
            if (upto < s)
            {
                /*
                 * Truncated behind our snapshot: the member must install
                 * it (it asks when it sees it cannot apply).  Keep it in
                 * contact with heartbeats meanwhile, at their rate.
                 */
                if (!TimestampDifferenceExceeds(p->last_send, now, svcbus_cluster_heartbeat_ms))
                {
                    pfree(entries.data);
                    return;
                }
                resetStringInfo(&entries);
                upto = p->next - 1;
            }
        }
        else
        {
            for (; s <= last_slot; s++)
            {
                Proposal   *pr = &props[s - mem_lo - 1];

                if (entries.len > 0 && entries.len + pr->len > MAX_ACCEPT_BYTES)
                    break;
                put_le(&entries, (uint64) s, 8);
                put_le(&entries, 0, 8);
                put_le(&entries, pr->len, 4);
                appendBinaryStringInfo(&entries, pr->data, pr->len);
                upto = s;
            }
        }
    }
    snprintf(b, sizeof(b), INT64_FORMAT, my_ballot);
    snprintf(c, sizeof(c), INT64_FORMAT, commit_idx);
    vals[0] = b;
    vals[1] = entries.data;
    lens[1] = entries.len;
    vals[2] = c;
    ident_args(p, &id);
    for (int k = 0; k < 6; k++)
        vals[3 + k] = id.v[k];
    if (peer_send(p, "SELECT ok, promised, match, entries, state, sysid, inc, lsn,"
                  " your_sysid, your_inc, your_lsn"
                  " FROM svcbus._paxos_accept($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                  9, vals, lens, fmts))
    {
        peer_push(p, REQ_ACCEPT, my_ballot, entries.len > 0 ? upto : 0, now);
        p->commit_sent = commit_idx;
        if (entries.len > 0)
            p->next = upto + 1;
    }
    pfree(entries.data);
}

static void
send_forward(Peer *p, TimestampTz now)
{
    const char *vals[1] = {fwd.data};
    int         lens[1] = {fwd.len};
    int         fmts[1] = {1};

    if (peer_send(p, "SELECT svcbus._paxos_forward($1)", 1, vals, lens, fmts))
    {
        peer_push(p, REQ_FORWARD, 0, 0, now);
        fwd_inflight = true;
    }
}

/* After a synchronous commit: its end is flushed; make it this server's identity. */
static void
note_durable_end(void)
{
    int64       sysid, lsn;

    svcbus_paxos_identity(&sysid, &lsn);
}

/* ---------------------------------------------------------------------
 * Snapshots (bus/README-paxos.md, "Snapshots")
 */

/* Ask p for its latest snapshot if it is past what we applied. */
static void
request_snapshot(Peer *p, TimestampTz now)
{
    char        a[32];
    const char *vals[1] = {a};

    if (snap_pending && !TimestampDifferenceExceeds(snap_asked_at, now, SNAPSHOT_ASK_MS))
        return;
    if (!peer_can_send(p))
        return;
    LWLockAcquire(cs->lock, LW_SHARED);
    snprintf(a, sizeof(a), INT64_FORMAT, cs->applied);
    LWLockRelease(cs->lock);
    if (peer_send(p, "SELECT slot, applied_time, digest, image FROM svcbus._paxos_snapshot($1)",
                  1, vals, NULL, NULL))
    {
        peer_push(p, REQ_SNAPSHOT, 0, 0, now);
        snap_pending = true;
        snap_asked_at = now;
    }
}

static Peer *
peer_by_id(int id)
{
    for (int i = 0; i < npeers; i++)
        if (peers[i].id == id)
            return &peers[i];
    return NULL;
}

/* Put a checked image into the arenas: the learner is at its slot now. */
static void
arenas_from_snapshot(const uint8 *img, size_t len, const SvcbusSnapArea *areas, int n,
                     const SvcbusSnapMeta *m)
{
    LWLockAcquire(cs->lock, LW_EXCLUSIVE);
    LWLockAcquire(cs->sm_lock, LW_EXCLUSIVE);
    svcbus_cluster_state_reset();
    svcbus_snapshot_apply(img, len, areas, n);
    cs->applied = m->slot;
    cs->applied_time = m->time_ms;
    cs->applied_digest = m->digest;
    LWLockRelease(cs->sm_lock);
    LWLockRelease(cs->lock);
}

/* Write the snapshot row (and truncate our log up to `truncate_to`); SPI connected. */
static void
store_snapshot(const SvcbusSnapMeta *m, const uint8 *img, size_t len, int64 truncate_to)
{
    Oid         types[4] = {INT8OID, INT8OID, INT8OID, BYTEAOID};
    Datum       vals[4];
    bytea      *v = (bytea *) palloc_extended(VARHDRSZ + len, MCXT_ALLOC_HUGE);
    Oid         ttypes[1] = {INT8OID};
    Datum       tvals[1] = {Int64GetDatum(truncate_to)};

    SET_VARSIZE(v, VARHDRSZ + len);
    memcpy(VARDATA(v), img, len);
    vals[0] = Int64GetDatum(m->slot);
    vals[1] = Int64GetDatum(m->time_ms);
    vals[2] = Int64GetDatum((int64) m->digest);
    vals[3] = PointerGetDatum(v);
    if (SPI_execute_with_args("UPDATE svcbus_internal.paxos_snapshot SET slot = $1, applied_time = $2,"
                              " digest = $3, image = $4 WHERE id = 1",
                              4, types, vals, NULL, false, 0) != SPI_OK_UPDATE)
        elog(ERROR, "svcbus paxos: could not store a snapshot");
    pfree(v);
    if (truncate_to <= 0)
        return;
    /*
     * The acceptor row first: a prepare or accept in progress holds it, so
     * this waits for it, and one that comes later reads the new
     * `truncated` (and refuses a prepare from below it) before it reads
     * the log (extension/cluster_acceptor.c, lock_promised).
     */
    if (SPI_execute_with_args("UPDATE svcbus_internal.paxos_acceptor SET truncated = GREATEST(truncated, $1)"
                              " WHERE id = 1", 1, ttypes, tvals, NULL, false, 0) != SPI_OK_UPDATE ||
        SPI_execute_with_args("DELETE FROM svcbus_internal.paxos_log WHERE slot <= $1",
                              1, ttypes, tvals, NULL, false, 0) != SPI_OK_DELETE)
        elog(ERROR, "svcbus paxos: could not truncate the log");
}

/*
 * Every svcbus.cluster_snapshot_every applied slots: a snapshot of the
 * state machines at the applied slot, and the log truncated up to the
 * previous snapshot (one interval stays for members that lag a little).
 * Asynchronous commit: if a crash loses it, the log it would have
 * truncated is still there.
 */
static void
take_snapshot(void)
{
    SvcbusSnapArea areas[SVCBUS_SNAPSHOT_AREAS];
    SvcbusSnapMeta m;
    int         n;
    size_t      size, len;
    uint8      *img;
    int64       applied, prev = snap_slot;
    int64       t0 = mono_ms();

    LWLockAcquire(cs->lock, LW_SHARED);
    applied = cs->applied;
    m.slot = applied;
    m.time_ms = cs->applied_time;
    m.digest = cs->applied_digest;
    LWLockRelease(cs->lock);
    if (applied - snap_slot < svcbus_cluster_snapshot_every)
        return;
    n = svcbus_cluster_state_areas(areas, true);
    /* This process is the only writer of the arenas: they hold still. */
    LWLockAcquire(cs->sm_lock, LW_SHARED);
    size = svcbus_snapshot_size(areas, n);
    img = palloc_extended(size, MCXT_ALLOC_HUGE);
    len = svcbus_snapshot_encode(img, size, &m, areas, n);
    LWLockRelease(cs->sm_lock);
    svcbus_cluster_free_templates(areas, n);
    if (len == 0)
        elog(ERROR, "svcbus paxos: could not encode a snapshot");

    StartTransactionCommand();
    PushActiveSnapshot(GetTransactionSnapshot());
    SPI_connect();
    SetConfigOption("synchronous_commit", "off", PGC_SUSET, PGC_S_SESSION);
    store_snapshot(&m, img, len, prev);
    SPI_finish();
    PopActiveSnapshot();
    CommitTransactionCommand();
    MemoryContextSwitchTo(loop_cxt);
    pfree(img);
    snap_slot = applied;
    log_truncated = Max(log_truncated, prev);
    n_snapshots++;
    elog(LOG, "svcbus paxos: node %d took a snapshot at slot " INT64_FORMAT " (%zu bytes, %lld ms);"
         " log truncated up to slot " INT64_FORMAT, me, applied, len, (long long) (mono_ms() - t0), prev);
}

/*
 * Install a peer's snapshot past our applied index: check it, store it and
 * truncate our log up to its slot (durably, in one transaction), then put
 * it into the arenas.  Commands of clients waiting on slots it covers are
 * not delivered: their calls end with "outcome unknown" (SB202).
 */
static void
install_snapshot(Peer *p, const Outstanding *o)
{
    SvcbusSnapArea areas[SVCBUS_SNAPSHOT_AREAS];
    SvcbusSnapMeta m;
    SvcbusSnapRc rc;
    int         n = svcbus_cluster_state_areas(areas, false);
    int64       applied;
    Oid         types[3] = {INT8OID, INT8OID, INT8OID};
    Datum       vals[3];

    LWLockAcquire(cs->lock, LW_SHARED);
    applied = cs->applied;
    LWLockRelease(cs->lock);
    if (o->entries == NULL || o->max_slot <= applied)
        return;
    rc = svcbus_snapshot_check((const uint8 *) o->entries, o->entries_len, &m, areas, n);
    if (rc == SVCBUS_SNAP_OK && (m.slot != o->max_slot || m.time_ms != o->snap_time ||
                                 (int64) m.digest != o->snap_digest))
        rc = SVCBUS_SNAP_MALFORMED;
    if (rc != SVCBUS_SNAP_OK)
    {
        elog(WARNING, "svcbus paxos: node %d refused the snapshot of node %d at slot " INT64_FORMAT ": %s",
             me, p->id, o->max_slot, svcbus_snapshot_rc_name(rc));
        return;
    }
    StartTransactionCommand();
    PushActiveSnapshot(GetTransactionSnapshot());
    SPI_connect();
    SetConfigOption("synchronous_commit", "on", PGC_SUSET, PGC_S_SESSION);
    store_snapshot(&m, (const uint8 *) o->entries, o->entries_len, m.slot);
    vals[0] = Int64GetDatum(m.slot);
    vals[1] = Int64GetDatum(m.time_ms);
    vals[2] = Int64GetDatum((int64) m.digest);
    if (SPI_execute_with_args("UPDATE svcbus_internal.paxos_learner SET applied = $1,"
                              " applied_time = $2, digest = $3 WHERE id = 1",
                              3, types, vals, NULL, false, 0) != SPI_OK_UPDATE)
        elog(ERROR, "svcbus paxos: could not store the applied index");
    SPI_finish();
    PopActiveSnapshot();
    CommitTransactionCommand();
    note_durable_end();
    MemoryContextSwitchTo(loop_cxt);

    arenas_from_snapshot((const uint8 *) o->entries, o->entries_len, areas, n, &m);
    ConditionVariableBroadcast(&cs->applied_cv);
    snap_slot = m.slot;
    log_truncated = Max(log_truncated, m.slot);
    n_installs++;
    elog(LOG, "svcbus paxos: node %d installed the snapshot of node %d at slot " INT64_FORMAT
         " (%zu bytes; it had applied up to " INT64_FORMAT ")", me, p->id, m.slot, o->entries_len, applied);
}

/* What this node's snapshot and truncation point are (at worker start). */
static void
load_snapshot_state(void)
{
    bool        isnull;

    StartTransactionCommand();
    PushActiveSnapshot(GetTransactionSnapshot());
    SPI_connect();
    if (SPI_execute("SELECT s.slot, a.truncated FROM svcbus_internal.paxos_snapshot s,"
                    " svcbus_internal.paxos_acceptor a WHERE s.id = 1 AND a.id = 1",
                    true, 1) != SPI_OK_SELECT || SPI_processed != 1)
        elog(ERROR, "svcbus paxos: could not read this node's snapshot state");
    snap_slot = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
    log_truncated = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
    SPI_finish();
    PopActiveSnapshot();
    CommitTransactionCommand();
    MemoryContextSwitchTo(loop_cxt);
}

/*
 * A follower that cannot apply (the commit index is ahead, nothing applied
 * for a while) may be behind the leader's truncated log: ask the leader
 * for its snapshot (it answers with none if it has nothing newer).
 */
static void
check_stuck(TimestampTz now)
{
    int64       applied, commit;
    int         leader;
    Peer       *p;

    LWLockAcquire(cs->lock, LW_SHARED);
    applied = cs->applied;
    commit = cs->commit;
    leader = known_leader(now);
    LWLockRelease(cs->lock);
    if (applied != progress_applied || commit <= applied)
    {
        progress_applied = applied;
        progress_at = now;
        return;
    }
    if (!TimestampDifferenceExceeds(progress_at, now, STUCK_MS) || leader == 0 || leader == me)
        return;
    p = peer_by_id(leader);
    if (p != NULL && !snap_pending)
    {
        request_snapshot(p, now);
        progress_at = now;
    }
}

/* ---------------------------------------------------------------------
 * Reads (bus/README-paxos.md, "Reads")
 */

/* Hand read index `index` to every tracked read in `phase`. */
static void
reads_answer(uint8 phase, int64 index)
{
    SvcbusClusterReq *reqs = svcbus_cluster_reqs();
    int         n = 0;

    LWLockAcquire(cs->lock, LW_EXCLUSIVE);
    for (int i = 0; i < cs->nreqs; i++)
    {
        if (read_phase[i] != phase)
            continue;
        if (reqs[i].state == SVCBUS_REQ_READ && reqs[i].seq == read_seq[i])
        {
            memset(&reqs[i].result, 0, sizeof(reqs[i].result));
            reqs[i].result.slot = index;
            reqs[i].state = SVCBUS_REQ_DONE;
            n++;
        }
        read_phase[i] = READ_NONE;
        reads_open--;
    }
    if (n > 0)
        cs->read_rounds = ++n_read_rounds;
    LWLockRelease(cs->lock);
    if (n > 0)
        ConditionVariableBroadcast(&cs->applied_cv);
}

/* The read-index call failed: its reads go back to waiting for the next one. */
static void
reads_unsend(void)
{
    read_rpc_inflight = false;
    for (int i = 0; read_phase != NULL && i < cs->nreqs; i++)
        if (read_phase[i] == READ_SENT)
        {
            read_phase[i] = READ_TAKEN;
            read_take[i] = gsend;
        }
}

/* Take the new read requests (each stamped with the send counter now). */
static void
reads_scan(void)
{
    SvcbusClusterReq *reqs = svcbus_cluster_reqs();
    uint64      asked;

    if (read_phase == NULL)
    {
        read_seq = MemoryContextAllocZero(TopMemoryContext, cs->nreqs * sizeof(uint64));
        read_take = MemoryContextAllocZero(TopMemoryContext, cs->nreqs * sizeof(uint64));
        read_phase = MemoryContextAllocZero(TopMemoryContext, cs->nreqs);
    }
    LWLockAcquire(cs->lock, LW_SHARED);
    asked = cs->read_requests;
    if (asked != reads_seen || reads_open > 0)
    {
        for (int i = 0; i < cs->nreqs; i++)
        {
            if (reqs[i].state == SVCBUS_REQ_READ && (read_phase[i] == READ_NONE || read_seq[i] != reqs[i].seq))
            {
                if (read_phase[i] == READ_NONE)
                    reads_open++;
                read_seq[i] = reqs[i].seq;
                read_take[i] = gsend;
                read_phase[i] = READ_TAKEN;
            }
            else if (read_phase[i] != READ_NONE && reqs[i].state != SVCBUS_REQ_READ)
            {
                /* Its caller gave up. */
                read_phase[i] = READ_NONE;
                reads_open--;
            }
        }
    }
    reads_seen = asked;
    LWLockRelease(cs->lock);
}

/*
 * Leader: a read taken when the send counter was t is answered once a
 * quorum (this node's acceptor included) has acknowledged, in our ballot,
 * an accept sent after t: no other leader can have chosen anything by
 * then.  Its index is our commit index, once that covers every slot we
 * re-proposed at takeover (any slot chosen before we led is among them).
 * Peers that have no send after the oldest waiting read get a heartbeat now.
 */
static void
leader_reads(TimestampTz now)
{
    uint64      acks[SVCBUS_CLUSTER_MAX_NODES];
    uint64      confirmed, oldest = PG_UINT64_MAX;
    bool        all = true;

    if (reads_open == 0)
        return;
    for (int i = 0; i < npeers; i++)
        acks[i] = peers[i].ack_gseq;
    for (int i = 0; i < npeers; i++)
        for (int j = i + 1; j < npeers; j++)
            if (acks[j] > acks[i])
            {
                uint64      t = acks[i];

                acks[i] = acks[j];
                acks[j] = t;
            }
    confirmed = acks[quorum - 1];
    for (int i = 0; i < cs->nreqs; i++)
        if (read_phase[i] == READ_TAKEN)
        {
            if (read_take[i] < confirmed && commit_idx >= takeover_max)
                read_phase[i] = READ_SENT;  /* answered below */
            else
            {
                all = false;
                oldest = Min(oldest, read_take[i]);
            }
        }
    reads_answer(READ_SENT, commit_idx);
    if (all)
        return;
    for (int i = 0; i < npeers; i++)
        if (peers[i].last_gsend <= oldest && peer_can_send(&peers[i]))
            send_accept(&peers[i], now, true);
}

/* Follower: one read-index call to the leader for the reads taken so far. */
static void
follower_reads(TimestampTz now)
{
    int         leader;
    Peer       *p;

    if (reads_open == 0 || read_rpc_inflight)
        return;
    LWLockAcquire(cs->lock, LW_SHARED);
    leader = known_leader(now);
    LWLockRelease(cs->lock);
    if (leader == 0 || leader == me)
        return;
    p = peer_by_id(leader);
    if (p == NULL || !peer_can_send(p))
        return;
    if (peer_send(p, "SELECT svcbus._paxos_read_index()", 0, NULL, NULL, NULL))
    {
        peer_push(p, REQ_READ_INDEX, 0, 0, now);
        read_rpc_inflight = true;
        for (int i = 0; i < cs->nreqs; i++)
            if (read_phase[i] == READ_TAKEN)
                read_phase[i] = READ_SENT;
    }
}

/* ---------------------------------------------------------------------
 * Replies
 */

static void become_follower(int64 seen_ballot);
static void on_reply(Peer *p, Outstanding *o, TimestampTz now);

/* How many columns each call's reply has (see the queries in send_*). */
static int
reply_fields(ReqKind kind)
{
    switch (kind)
    {
        case REQ_FORWARD:
        case REQ_READ_INDEX:
            return 1;
        case REQ_SNAPSHOT:
            return 4;
        case REQ_RECOVER:
            return 7;
        default:
            return 11;
    }
}

/* A bytea column of a reply into o->entries (TopMemoryContext); NULL: none. */
static void
take_bytea(PGresult *r, int col, Outstanding *o)
{
    size_t      n;
    unsigned char *raw;

    if (PQgetisnull(r, 0, col))
        return;
    raw = PQunescapeBytea((unsigned char *) PQgetvalue(r, 0, col), &n);
    if (raw == NULL)
    {
        o->failed = true;
        return;
    }
    o->entries = MemoryContextAllocHuge(TopMemoryContext, Max(n, 1));
    memcpy(o->entries, raw, n);
    o->entries_len = n;
    PQfreemem(raw);
}

static void
peer_read(Peer *p, TimestampTz now)
{
    if (p->state == CONN_CONNECTING)
    {
        peer_poll_connect(p, now);
        return;
    }
    if (p->state != CONN_READY)
        return;
    if (PQconsumeInput(p->conn) != 1)
    {
        peer_drop(p, PQerrorMessage(p->conn));
        return;
    }
    if (p->want_write)
        p->want_write = (PQflush(p->conn) == 1);

    while (p->state == CONN_READY && p->qlen > 0 && !PQisBusy(p->conn))
    {
        PGresult   *r = PQgetResult(p->conn);
        Outstanding *o = &p->q[p->qhead];

        if (r == NULL)
            continue;           /* end of one query's results */
        switch (PQresultStatus(r))
        {
            case PGRES_TUPLES_OK:
                if (PQntuples(r) == 1 && PQnfields(r) != reply_fields(o->kind))
                {
                    /* A member with another version of svcbus: not a reply we can read. */
                    o->failed = true;
                    elog(WARNING, "svcbus paxos: node %d answered with %d columns, expected %d",
                         p->id, PQnfields(r), reply_fields(o->kind));
                }
                else if (PQntuples(r) == 1)
                {
                    o->have_result = true;
                    if (o->kind == REQ_FORWARD)
                        o->forwarded = atoi(PQgetvalue(r, 0, 0));
                    else if (o->kind == REQ_READ_INDEX)
                        o->match = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
                    else if (o->kind == REQ_SNAPSHOT)
                    {
                        o->max_slot = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
                        o->snap_time = strtoll(PQgetvalue(r, 0, 1), NULL, 10);
                        o->snap_digest = strtoll(PQgetvalue(r, 0, 2), NULL, 10);
                        take_bytea(r, 3, o);
                    }
                    else if (o->kind == REQ_RECOVER)
                    {
                        o->ok = PQgetvalue(r, 0, 0)[0] == 't';
                        o->promised = strtoll(PQgetvalue(r, 0, 1), NULL, 10);
                        o->max_slot = strtoll(PQgetvalue(r, 0, 2), NULL, 10);
                        o->inc = strtoll(PQgetvalue(r, 0, 4), NULL, 10);
                        o->upto = strtoll(PQgetvalue(r, 0, 5), NULL, 10);
                        o->truncated = strtoll(PQgetvalue(r, 0, 6), NULL, 10);
                        take_bytea(r, 3, o);
                    }
                    else
                    {
                        o->state = atoi(PQgetvalue(r, 0, 4));
                        o->sysid = strtoll(PQgetvalue(r, 0, 5), NULL, 10);
                        o->inc = strtoll(PQgetvalue(r, 0, 6), NULL, 10);
                        o->lsn = strtoll(PQgetvalue(r, 0, 7), NULL, 10);
                        for (int k = 0; k < 3; k++)
                            o->you[k] = strtoll(PQgetvalue(r, 0, 8 + k), NULL, 10);
                        o->ok = PQgetvalue(r, 0, 0)[0] == 't';
                        o->promised = strtoll(PQgetvalue(r, 0, 1), NULL, 10);
                        o->match = strtoll(PQgetvalue(r, 0, 2), NULL, 10);
                        if (o->kind == REQ_PREPARE)
                            take_bytea(r, 3, o);
                    }
                }
                break;
            case PGRES_PIPELINE_SYNC:
                /* The call's transaction has ended: its effects are durable. */
                p->qhead = (p->qhead + 1) % MAX_INFLIGHT;
                p->qlen--;
                p->last_reply = now;
                if (o->have_result && !o->failed)
                    on_reply(p, o, now);
                else if (o->kind == REQ_FORWARD)
                    fwd_inflight = false;
                else if (o->kind == REQ_SNAPSHOT)
                    snap_pending = false;
                else if (o->kind == REQ_READ_INDEX)
                    reads_unsend();
                if (o->entries)
                    pfree(o->entries);
                o->entries = NULL;
                break;
            default:
                o->failed = true;
                elog(DEBUG1, "svcbus paxos: node %d: %s", p->id, PQresultErrorMessage(r));
                break;
        }
        PQclear(r);
    }
    /* A peer that stopped answering (SIGSTOP, partition) is dropped. */
    if (p->state == CONN_READY && p->qlen > 0 &&
        TimestampDifferenceExceeds(p->q[p->qhead].sent_at, now, REQUEST_TIMEOUT_MS))
        peer_drop(p, "request timed out");
}

static void
seen_ballot(int64 b)
{
    if (b / 256 > max_round)
        max_round = b / 256;
}

/* Index of slot's entry in recovered[], -1 if none. */
static int
recovered_find(int64 slot)
{
    int64       off = slot - rec_base;

    if (off < 0 || off >= rec_index_hi)
        return -1;
    return rec_index[off] - 1;
}

/* Keep the higher-ballot value for slot (slots >= rec_base). */
static void
recovered_add(int64 slot, int64 ballot, const char *data, size_t len)
{
    int64       off = slot - rec_base;
    int         i = recovered_find(slot);

    if (off < 0)
        elog(ERROR, "svcbus paxos: recovered slot " INT64_FORMAT " below " INT64_FORMAT, slot, rec_base);
    if (i >= 0)
        {
            if (ballot > recovered[i].ballot)
            {
                pfree(recovered[i].data);
                recovered[i].ballot = ballot;
                recovered[i].data = MemoryContextAlloc(TopMemoryContext, Max(len, 1));
                memcpy(recovered[i].data, data, len);
                recovered[i].len = len;
            }
            return;
        }
    if (nrecovered == recovered_cap)
    {
        recovered_cap = Max(16, recovered_cap * 2);
        recovered = recovered ? repalloc(recovered, recovered_cap * sizeof(Recovered))
            : MemoryContextAlloc(TopMemoryContext, recovered_cap * sizeof(Recovered));
    }
    if (off >= rec_index_cap)
    {
        int64       cap = Max(Max(1024, rec_index_cap * 2), off + 1);

        rec_index = rec_index ? repalloc_huge(rec_index, cap * sizeof(int))
            : MemoryContextAllocHuge(TopMemoryContext, cap * sizeof(int));
        memset(rec_index + rec_index_cap, 0, (cap - rec_index_cap) * sizeof(int));
        rec_index_cap = cap;
    }
    rec_index[off] = nrecovered + 1;
    rec_index_hi = Max(rec_index_hi, off + 1);
    recovered[nrecovered].slot = slot;
    recovered[nrecovered].ballot = ballot;
    recovered[nrecovered].data = MemoryContextAlloc(TopMemoryContext, Max(len, 1));
    memcpy(recovered[nrecovered].data, data, len);
    recovered[nrecovered].len = len;
    nrecovered++;
}

static void
recovered_clear(void)
{
    for (int i = 0; i < nrecovered; i++)
        pfree(recovered[i].data);
    nrecovered = 0;
    if (rec_index_hi > 0)
        memset(rec_index, 0, rec_index_hi * sizeof(int));
    rec_index_hi = 0;
}

static void
props_clear(void)
{
    if (props)
        for (int64 s = mem_lo + 1; s <= last_slot; s++)
            pfree(props[s - mem_lo - 1].data);
    last_slot = mem_lo;
}

/* Append a proposal for slot last_slot + 1 (takes a copy). */
static void
props_append(const char *data, size_t len)
{
    int64       n = last_slot - mem_lo;

    if (n >= props_cap)
    {
        props_cap = Max(64, props_cap * 2);
        props = props ? repalloc(props, props_cap * sizeof(Proposal))
            : MemoryContextAlloc(TopMemoryContext, props_cap * sizeof(Proposal));
    }
    props[n].data = MemoryContextAlloc(TopMemoryContext, Max(len, 1));
    memcpy(props[n].data, data, len);
    props[n].len = len;
    last_slot++;
}

/* Drop proposals every member has accepted and that are chosen. */
static void
props_trim(void)
{
    int64       lo = commit_idx;
    int64       drop;

    for (int i = 0; i < npeers; i++)
        lo = Min(lo, peers[i].match_known ? peers[i].match : mem_lo);
    /* Keep a window for lagging peers only while it is small. */
    if (last_slot - mem_lo > 4096)
        lo = Max(lo, commit_idx - 1024);
    drop = lo - mem_lo;
    if (drop <= 0)
        return;
    for (int64 i = 0; i < drop; i++)
        pfree(props[i].data);
    memmove(props, props + drop, (last_slot - lo) * sizeof(Proposal));
    mem_lo = lo;
}

static int64
leader_now(void)
{
    int64       t = base_time + (mono_ms() - takeover_mono);

    if (t < last_time)
        t = last_time;
    last_time = t;
    return t;
}

static void
become_leader(void)
{
    int64       maxslot = prep_from - 1;
    int64       maxtime;
    uint8       noop[SVCBUS_BATCH_HEADER];

    for (int i = 0; i < nrecovered; i++)
        maxslot = Max(maxslot, recovered[i].slot);

    LWLockAcquire(cs->lock, LW_SHARED);
    maxtime = cs->applied_time;
    LWLockRelease(cs->lock);
    for (int i = 0; i < nrecovered; i++)
    {
        int64       t;

        if (svcbus_batch_validate((uint8 *) recovered[i].data, recovered[i].len, &t, NULL))
            maxtime = Max(maxtime, t);
    }
    base_time = maxtime;
    takeover_mono = mono_ms();
    last_time = maxtime;

    props_clear();
    mem_lo = prep_from - 1;
    last_slot = mem_lo;
    svcbus_batch_header(noop, maxtime, 0);
    for (int64 s = prep_from; s <= maxslot; s++)
    {
        int         i = recovered_find(s);

        if (i >= 0)
            props_append(recovered[i].data, recovered[i].len);
        else
            props_append((char *) noop, sizeof(noop));
    }
    recovered_clear();

    LWLockAcquire(cs->lock, LW_SHARED);
    commit_idx = cs->applied;
    LWLockRelease(cs->lock);
    takeover_max = maxslot;
    /* Reads sent to the former leader: this leadership confirms them itself. */
    reads_unsend();
    for (int i = 0; i < npeers; i++)
    {
        peers[i].next = prep_from;
        peers[i].ack_gseq = 0;
        peers[i].match_known = false;
        peers[i].rewind_seq = peers[i].send_seq + 1;
    }
    role = SVCBUS_ROLE_LEADER;
    leader_quorum_at = GetCurrentTimestamp();
    elog(LOG, "svcbus paxos: node %d is leader with ballot " INT64_FORMAT " from slot " INT64_FORMAT
         " (%lld recovered slots)", me, my_ballot, prep_from, (long long) (maxslot - prep_from + 1));
    publish_role();
}

static void
become_follower(int64 seen)
{
    if (role == SVCBUS_ROLE_LEADER)
        elog(LOG, "svcbus paxos: node %d steps down as leader (ballot " INT64_FORMAT ", saw " INT64_FORMAT ")",
             me, my_ballot, seen);
    seen_ballot(seen);
    role = SVCBUS_ROLE_FOLLOWER;
    props_clear();
    recovered_clear();
    election_deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), random_election_ms());
    LWLockAcquire(cs->lock, LW_EXCLUSIVE);
    if (cs->leader == me)
        cs->leader = 0;
    LWLockRelease(cs->lock);
    publish_role();
}

static void
advance_commit(void)
{
    int64       m[SVCBUS_CLUSTER_MAX_NODES];
    int         n = 0;
    int64       c;

    for (int i = 0; i < npeers; i++)
        m[n++] = peers[i].match_known ? peers[i].match : 0;
    /* Q-th highest */
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++)
            if (m[j] > m[i])
            {
                int64       t = m[i];

                m[i] = m[j];
                m[j] = t;
            }
    c = Min(m[quorum - 1], last_slot);
    if (c > commit_idx)
    {
        commit_idx = c;
        /* The leader's own learner may apply at once (it is leader my_ballot). */
        LWLockAcquire(cs->lock, LW_EXCLUSIVE);
        if (my_ballot >= cs->leader_ballot)
        {
            cs->leader_ballot = my_ballot;
            cs->commit = commit_idx;
        }
        LWLockRelease(cs->lock);
        /* The others learn it from the next message: see leader_drive. */
    }
}

/* Keep the highest-ballot value per slot >= from of a promise's entries. */
static void
merge_entries(const Outstanding *o, int64 from)
{
    size_t      off = 0;
    const uint8 *e = (const uint8 *) o->entries;

    if (nrecovered == 0)
        rec_base = from;

    while (e != NULL && off + 20 <= o->entries_len)
    {
        int64       slot = get_le64(e + off);
        int64       ballot = get_le64(e + off + 8);
        uint32      len = (uint32) e[off + 16] | ((uint32) e[off + 17] << 8) |
            ((uint32) e[off + 18] << 16) | ((uint32) e[off + 19] << 24);

        if (len > o->entries_len - off - 20)
            break;
        if (slot >= from && svcbus_batch_validate(e + off + 20, len, NULL, NULL))
            recovered_add(slot, ballot, (const char *) e + off + 20, len);
        off += 20 + len;
    }
}

static void mark_lost(void);

/*
 * Did a peer see a later state of this node than it has now: a later
 * incarnation, another system, or WAL beyond what this server has flushed?
 * What a peer saw of an older incarnation was before our last recovery.
 */
static bool
behind_what_peer_saw(const int64 *you)
{
    int64       inc;

    if (you[0] == 0)
        return false;
    LWLockAcquire(cs->lock, LW_SHARED);
    inc = cs->incarnation;
    LWLockRelease(cs->lock);
    if (you[1] < inc)
        return false;
    return you[1] > inc || you[0] != (int64) GetSystemIdentifier() ||
        you[2] > (int64) GetFlushRecPtr(NULL);
}

static void
on_reply(Peer *p, Outstanding *o, TimestampTz now)
{
    if (o->kind == REQ_READ_INDEX)
    {
        read_rpc_inflight = false;
        if (o->match >= 0)
            reads_answer(READ_SENT, o->match);
        else
            reads_unsend();     /* not the leader (any more): ask the next one */
        return;
    }
    if (o->kind == REQ_SNAPSHOT)
    {
        snap_pending = false;
        if (role != SVCBUS_ROLE_LEADER)
            install_snapshot(p, o);
        if (rec_snap_wait)
        {
            /* The recovery starts over from the new applied index. */
            rec_snap_wait = false;
            rec_active = false;
        }
        return;
    }
    if (o->kind == REQ_RECOVER)
    {
        if (role != SVCBUS_ROLE_RECOVERING || !rec_active || o->ballot != rec_ballot ||
            o->last_slot != rec_from || p->rec_done)
            return;             /* an answer to an older window or attempt */
        if (o->ok && o->truncated >= rec_from && o->truncated > rec_snap_trunc)
        {
            /* Its log no longer holds the window: we need its snapshot first. */
            rec_snap_trunc = o->truncated;
            rec_snap_peer = p->id;
        }
        if (!o->ok)
        {
            /* A higher promise: start over with a ballot above it. */
            seen_ballot(o->promised);
            rec_active = false;
            return;
        }
        merge_entries(o, rec_from);
        rec_window_max = Max(rec_window_max, o->max_slot);
        rec_window_end = Min(rec_window_end, o->upto);
        rec_inc = Max(rec_inc, o->inc);
        p->rec_done = true;
        return;
    }
    if (o->kind == REQ_FORWARD)
    {
        fwd_inflight = false;
        if (o->forwarded > 0)
        {
            n_forwarded += fwd_count;
            resetStringInfo(&fwd);
            fwd_count = 0;
        }
        return;
    }
    if (o->state == ID_CALLER_LOST || (p->id != me && behind_what_peer_saw(o->you)))
    {
        /* A peer saw more of this node than it has now. */
        if (role != SVCBUS_ROLE_RECOVERING)
            mark_lost();
        return;
    }
    if (o->state == ID_TRUNCATED)
    {
        /* Our candidacy asked for slots p has truncated: we are behind. */
        svcbus_paxos_saw(cs, p->id, o->sysid, o->inc, o->lsn);
        if (role == SVCBUS_ROLE_CANDIDATE && o->ballot == my_ballot)
            become_follower(my_ballot);
        if (role != SVCBUS_ROLE_RECOVERING)
            request_snapshot(p, now);
        return;
    }
    if (o->state != ID_OK)
        return;                 /* p is recovering: no vote */
    svcbus_paxos_saw(cs, p->id, o->sysid, o->inc, o->lsn);
    if (!o->ok)
    {
        seen_ballot(o->promised);
        if ((role == SVCBUS_ROLE_LEADER || role == SVCBUS_ROLE_CANDIDATE) &&
            o->ballot == my_ballot && o->promised > my_ballot)
            become_follower(o->promised);
        return;
    }
    if (o->ballot != my_ballot)
        return;                 /* an answer to an older round */

    if (o->kind == REQ_PREPARE && role == SVCBUS_ROLE_CANDIDATE && !p->promised)
    {
        merge_entries(o, prep_from);
        p->promised = true;
        npromises++;
        if (npromises >= quorum)
            become_leader();
        return;
    }
    if (o->kind == REQ_ACCEPT && role == SVCBUS_ROLE_LEADER)
    {
        if (!p->match_known || o->match > p->match)
            p->match = o->match;
        p->match_known = true;
        p->ack_gseq = Max(p->ack_gseq, o->gseq);
        /*
         * A gap: the acceptor lacks slots after its match; resend from
         * there.  A heartbeat's reply shows it too (it is answered after
         * every earlier call on the connection): without it a member that
         * lost its log (an emptied node after its recovery) would wait for
         * the next write to be caught up, and reads write nothing.
         */
        if (o->seq >= p->rewind_seq &&
            (o->last_slot > o->match || (o->last_slot == 0 && o->match + 1 < p->next)))
        {
            p->next = o->match + 1;
            p->rewind_seq = p->send_seq + 1;
        }
        if (p->next <= p->match)
            p->next = p->match + 1;
        advance_commit();
    }
}

/* ---------------------------------------------------------------------
 * Roles
 */

/*
 * Choose this candidate's ballot and promise it on this node's own acceptor,
 * durably, before any other node hears of it.  The ballot is one round above
 * the highest this node's acceptor ever promised, so every ballot this node
 * ever used is at most its durable promise: after a crash (when max_round and
 * the shared-memory hint start from zero) it can never pick a ballot it
 * already led with and propose different values under it.  The Promela model
 * (test/model/paxos.pml, SEED 0) finds that two-values-in-one-slot run for
 * the older "round above what shared memory saw" rule.
 */
static int64
own_promise(void)
{
    int64       ballot;
    bool        isnull;
    Oid         types[1] = {INT8OID};
    Datum       vals[1];

    StartTransactionCommand();
    PushActiveSnapshot(GetTransactionSnapshot());
    SPI_connect();
    SetConfigOption("synchronous_commit", "on", PGC_SUSET, PGC_S_SESSION);
    if (SPI_execute("SELECT promised FROM svcbus_internal.paxos_acceptor WHERE id = 1 FOR UPDATE",
                    false, 0) != SPI_OK_SELECT || SPI_processed != 1)
        elog(ERROR, "svcbus paxos: could not read this node's acceptor state");
    seen_ballot(DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)));
    max_round++;
    ballot = max_round * 256 + me;
    vals[0] = Int64GetDatum(ballot);
    if (SPI_execute_with_args("UPDATE svcbus_internal.paxos_acceptor SET promised = $1 WHERE id = 1",
                              1, types, vals, NULL, false, 0) != SPI_OK_UPDATE)
        elog(ERROR, "svcbus paxos: could not store this node's promise");
    SPI_finish();
    PopActiveSnapshot();
    CommitTransactionCommand();     /* synchronous: flushed before we go on */
    note_durable_end();
    MemoryContextSwitchTo(loop_cxt);

    LWLockAcquire(cs->lock, LW_EXCLUSIVE);
    if (ballot > cs->promised)
        cs->promised = ballot;
    LWLockRelease(cs->lock);
    return ballot;
}

static void
start_election(TimestampTz now)
{
    LWLockAcquire(cs->lock, LW_SHARED);
    seen_ballot(cs->promised);
    prep_from = cs->applied + 1;
    LWLockRelease(cs->lock);

    role = SVCBUS_ROLE_CANDIDATE;
    my_ballot = own_promise();
    npromises = 0;
    recovered_clear();
    n_elections++;
    for (int i = 0; i < npeers; i++)
    {
        peers[i].promised = false;
        if (peer_can_send(&peers[i]))
            send_prepare(&peers[i], now);
    }
    election_deadline = TimestampTzPlusMilliseconds(now, random_election_ms());
    publish_role();
}

/* Leader: turn queued commands into a new batch, or a no-op when time must pass. */
static void
leader_propose(TimestampTz now)
{
    static uint8 *buf = NULL;
    size_t      len;
    int         count;
    bool        need_tick = false;

    if (last_slot - commit_idx >= MAX_OPEN_BATCHES)
        return;
    if (buf == NULL)
        buf = MemoryContextAlloc(TopMemoryContext, MAX_BATCH_BYTES + SVCBUS_BATCH_HEADER);
    len = svcbus_cluster_ring_take(buf + SVCBUS_BATCH_HEADER, MAX_BATCH_BYTES, &count);
    if (count == 0)
    {
        int64       deadline;
        int64       t = base_time + (mono_ms() - takeover_mono);

        LWLockAcquire(cs->sm_lock, LW_SHARED);
        deadline = Min(svcbus_reg_next_deadline(svcbus_cluster_registry()),
                       svcbus_clock_next_deadline(svcbus_cluster_locks()));
        LWLockRelease(cs->sm_lock);
        need_tick = (deadline <= t && last_slot == commit_idx &&
                     TimestampDifferenceExceeds(last_noop, now, 50));
        /* An empty batch right after takeover announces the new leader's time. */
        if (!need_tick)
            return;
        last_noop = now;
    }
    svcbus_batch_header(buf, leader_now(), (uint32) count);
    props_append((char *) buf, len + SVCBUS_BATCH_HEADER);
    n_batches++;
    n_commands += count;
    for (int i = 0; i < npeers; i++)
        if (peer_can_send(&peers[i]) && peers[i].next == last_slot)
            send_accept(&peers[i], now, false);
}

static void
leader_drive(TimestampTz now)
{
    int         answered = 0;

    leader_propose(now);
    for (int i = 0; i < npeers; i++)
    {
        Peer       *p = &peers[i];

        if (TimestampDifferenceExceeds(p->last_reply, now, svcbus_cluster_election_timeout_ms) == false &&
            p->state == CONN_READY)
            answered++;
        if (!peer_can_send(p))
            continue;
        if (p->next <= last_slot && p->qlen < MAX_INFLIGHT / 2)
            send_accept(p, now, false);
        else if (p->commit_sent < commit_idx && p->id != me)
            send_accept(p, now, true);  /* tell it the new commit index now */
        else if (TimestampDifferenceExceeds(p->last_send, now, svcbus_cluster_heartbeat_ms) &&
                 p->qlen == 0)
            send_accept(p, now, p->next > last_slot);
    }
    if (answered >= quorum)
        leader_quorum_at = now;
    else if (TimestampDifferenceExceeds(leader_quorum_at, now, 2 * svcbus_cluster_election_timeout_ms))
        become_follower(my_ballot); /* cut off from a quorum: let clients know fast */
    props_trim();
}

/* Follower: hand queued commands to the leader. */
static void
follower_forward(TimestampTz now)
{
    int         leader;
    static uint8 *buf = NULL;

    LWLockAcquire(cs->lock, LW_SHARED);
    leader = known_leader(now);
    LWLockRelease(cs->lock);

    if (buf == NULL)
        buf = MemoryContextAlloc(TopMemoryContext, MAX_BATCH_BYTES);
    if (fwd_count == 0)
    {
        int         count;
        size_t      len = svcbus_cluster_ring_take(buf, MAX_BATCH_BYTES, &count);

        if (count == 0)
            return;
        appendBinaryStringInfo(&fwd, (char *) buf, len);
        fwd_count = count;
        fwd_since = now;
    }
    if (TimestampDifferenceExceeds(fwd_since, now, svcbus_cluster_timeout_ms))
    {
        /* Their clients have given up: the outcome was reported unknown. */
        resetStringInfo(&fwd);
        fwd_count = 0;
        return;
    }
    if (fwd_inflight || leader == 0 || leader == me)
        return;
    for (int i = 0; i < npeers; i++)
        if (peers[i].id == leader && peer_can_send(&peers[i]))
            send_forward(&peers[i], now);
}

/* ---------------------------------------------------------------------
 * Lost state (bus/README-paxos.md, "Lost state")
 */

/* A peer found this node behind what it saw of it: stop voting, durably. */
/* Update this node's acceptor row in a transaction of its own, committed synchronously. */
static void
acceptor_row_update(const char *sql, int nargs, Oid *types, Datum *vals, const char *what)
{
    StartTransactionCommand();
    PushActiveSnapshot(GetTransactionSnapshot());
    SPI_connect();
    SetConfigOption("synchronous_commit", "on", PGC_SUSET, PGC_S_SESSION);
    if (SPI_execute_with_args(sql, nargs, types, vals, NULL, false, 0) != SPI_OK_UPDATE)
        elog(ERROR, "svcbus paxos: could not %s", what);
    SPI_finish();
    PopActiveSnapshot();
    CommitTransactionCommand();
    note_durable_end();
    MemoryContextSwitchTo(loop_cxt);
}

static void
mark_lost(void)
{
    acceptor_row_update("UPDATE svcbus_internal.paxos_acceptor SET recovering = true WHERE id = 1",
                        0, NULL, NULL, "mark this node recovering");
    LWLockAcquire(cs->lock, LW_EXCLUSIVE);
    cs->recovering = true;
    LWLockRelease(cs->lock);
    elog(LOG, "svcbus paxos: node %d has lost acknowledged state (a peer saw more of it);"
         " it stops voting and recovers from its peers", me);
}

/* Store a window's merged values: a value replaces ours only if its ballot is higher. */
static void
recovery_store(void)
{
    Oid         types[3] = {INT8OID, INT8OID, BYTEAOID};
    SPIPlanPtr  plan;

    if (nrecovered == 0)
        return;
    StartTransactionCommand();
    PushActiveSnapshot(GetTransactionSnapshot());
    SPI_connect();
    SetConfigOption("synchronous_commit", "on", PGC_SUSET, PGC_S_SESSION);
    plan = SPI_prepare("INSERT INTO svcbus_internal.paxos_log AS l (slot, ballot, value)"
                       " VALUES ($1, $2, $3) ON CONFLICT (slot) DO UPDATE"
                       " SET ballot = EXCLUDED.ballot, value = EXCLUDED.value"
                       " WHERE l.ballot < EXCLUDED.ballot", 3, types);
    if (plan == NULL)
        elog(ERROR, "svcbus paxos: could not prepare the recovery insert");
    for (int i = 0; i < nrecovered; i++)
    {
        bytea      *v;
        Datum       vals[3];

        if (recovered[i].slot > rec_window_end)
            continue;           /* not every member's answer covers it: next window */
        v = (bytea *) palloc(VARHDRSZ + recovered[i].len);
        /*
         * A value accepted before a member promised our ballot is what our
         * phase 1 found: we accept it at our ballot, as a leader would
         * propose it.  One accepted later, at a higher ballot, is a copy
         * of that leader's accept.
         */
        SET_VARSIZE(v, VARHDRSZ + recovered[i].len);
        memcpy(VARDATA(v), recovered[i].data, recovered[i].len);
        vals[0] = Int64GetDatum(recovered[i].slot);
        vals[1] = Int64GetDatum(Max(recovered[i].ballot, rec_ballot));
        rec_label_max = Max(rec_label_max, recovered[i].ballot);
        vals[2] = PointerGetDatum(v);
        if (SPI_execute_plan(plan, vals, NULL, false, 0) < 0)
            elog(ERROR, "svcbus paxos: could not store a recovered value");
        pfree(v);
    }
    SPI_finish();
    PopActiveSnapshot();
    CommitTransactionCommand();
    note_durable_end();
    MemoryContextSwitchTo(loop_cxt);
}

/* Every window read: promise our ballot (or the highest value read), vote again. */
static void
recovery_finish(TimestampTz now)
{
    Oid         types[2] = {INT8OID, INT8OID};
    Datum       vals[2];
    int64       inc;

    LWLockAcquire(cs->lock, LW_SHARED);
    inc = Max(cs->incarnation, rec_inc) + 1;
    LWLockRelease(cs->lock);
    vals[0] = Int64GetDatum(Max(rec_ballot, rec_label_max));
    vals[1] = Int64GetDatum(inc);
    /*
     * A new incarnation, above any of ours a member saw: what peers expect
     * of an older one was sent before this recovery and no longer counts.
     */
    acceptor_row_update("UPDATE svcbus_internal.paxos_acceptor"
                        " SET promised = GREATEST(promised, $1), recovering = false,"
                        " incarnation = $2 WHERE id = 1",
                        2, types, vals, "end this node's recovery");

    LWLockAcquire(cs->lock, LW_EXCLUSIVE);
    cs->recovering = false;
    cs->incarnation = inc;
    if (Max(rec_ballot, rec_label_max) > cs->promised)
        cs->promised = Max(rec_ballot, rec_label_max);
    cs->recoveries = ++n_recoveries;
    LWLockRelease(cs->lock);
    seen_ballot(Max(rec_ballot, rec_label_max));
    elog(LOG, "svcbus paxos: node %d recovered from every other member up to slot " INT64_FORMAT
         " in %ld ms (ballot " INT64_FORMAT ", incarnation " INT64_FORMAT "); it votes again",
         me, rec_target, (long) (now - rec_started) / 1000, rec_ballot, inc);
    rec_active = false;
    recovered_clear();
    role = SVCBUS_ROLE_FOLLOWER;
    election_deadline = TimestampTzPlusMilliseconds(now, random_election_ms());
}

/*
 * Recovering: phase 1 at a ballot of our own on every other member
 * (svcbus._paxos_recover): the first window promises it (strictly above
 * each member's promise, or we start over with a higher ballot), the
 * later ones up to the highest slot any member had when first asked only
 * read (by then every member has promised it: entries below it can no
 * longer change except to a higher ballot's, so a member's later answer is
 * still its phase-1 answer; a leader elected meanwhile does not make us
 * start over, which would never end for a long log).  Keep the
 * highest-ballot value per slot and accept it ourselves (recovery_store).
 * Once every other member has promised our ballot, no ballot below it can
 * gather a quorum again, so no acknowledgement we gave before we lost
 * state can still count towards choosing a value we do not now hold; every
 * value chosen before is held by another member of the quorum that chose
 * it; every ballot we may have promised is at most the promise of the
 * member that proposed it (it promised its ballot to itself first), hence
 * below ours.  Needs every other member (bus/README-paxos.md, "Lost state").
 */
static void
recovery_drive(TimestampTz now)
{
    int         others = 0, done = 0;

    if (rec_snap_wait)
    {
        /* Waiting for a member's snapshot; if the request failed, start over. */
        if (!snap_pending)
        {
            rec_snap_wait = false;
            rec_active = false;
        }
        return;
    }
    if (!rec_active)
    {
        LWLockAcquire(cs->lock, LW_SHARED);
        rec_from = cs->applied + 1;
        LWLockRelease(cs->lock);
        rec_active = true;
        rec_target = -1;
        rec_window_max = 0;
        rec_window_end = PG_INT64_MAX;
        rec_label_max = 0;
        rec_inc = 0;
        rec_snap_peer = 0;
        rec_snap_trunc = 0;
        rec_started = now;
        /* Our own ballot, durable on our acceptor first, as a candidate's. */
        rec_ballot = own_promise();
        recovered_clear();
        for (int i = 0; i < npeers; i++)
            peers[i].rec_asked = peers[i].rec_done = false;
        elog(LOG, "svcbus paxos: node %d recovering from slot " INT64_FORMAT, me, rec_from);
    }
    for (int i = 0; i < npeers; i++)
    {
        Peer       *p = &peers[i];

        if (p->id == me)
            continue;
        others++;
        if (p->rec_done)
            done++;
        else if (!p->rec_asked && peer_can_send(p) && p->qlen == 0)
            send_recover(p, now);
    }
    if (done < others)
        return;
    if (rec_snap_peer != 0)
    {
        /*
         * A member's log starts after rec_from: those slots are chosen and
         * in its snapshot.  Install it, then recover from after it (every
         * member's log reaches back to its own snapshot, at most this one).
         */
        Peer       *sp = peer_by_id(rec_snap_peer);

        recovered_clear();
        rec_snap_peer = 0;
        if (sp != NULL)
        {
            request_snapshot(sp, now);
            rec_snap_wait = snap_pending;
        }
        if (!rec_snap_wait)
            rec_active = false;
        return;
    }
    recovery_store();
    recovered_clear();
    if (rec_target < 0)
        rec_target = rec_window_max;
    rec_from = Max(rec_window_end, rec_from) + 1;
    rec_window_end = PG_INT64_MAX;
    for (int i = 0; i < npeers; i++)
        peers[i].rec_asked = peers[i].rec_done = false;
    if (rec_from > rec_target)
        recovery_finish(now);
}

/* Save what this node saw of its peers (a lower bound: asynchronous commit). */
static void
save_seen(TimestampTz now)
{
    int64       ids[SVCBUS_CLUSTER_MAX_NODES], sys[SVCBUS_CLUSTER_MAX_NODES],
                incs[SVCBUS_CLUSTER_MAX_NODES], lsn[SVCBUS_CLUSTER_MAX_NODES];
    int         n = 0;
    bool        dirty;

    if (!TimestampDifferenceExceeds(seen_saved_at, now, SAVE_SEEN_MS))
        return;
    seen_saved_at = now;
    LWLockAcquire(cs->lock, LW_EXCLUSIVE);
    dirty = cs->seen_dirty;
    cs->seen_dirty = false;
    for (int i = 0; dirty && i < npeers; i++)
        if (cs->peers[i].seen_sysid != 0)
        {
            ids[n] = cs->peers[i].id;
            sys[n] = cs->peers[i].seen_sysid;
            incs[n] = cs->peers[i].seen_inc;
            lsn[n] = cs->peers[i].seen_lsn;
            n++;
        }
    LWLockRelease(cs->lock);
    if (n == 0)
        return;
    StartTransactionCommand();
    PushActiveSnapshot(GetTransactionSnapshot());
    SPI_connect();
    SetConfigOption("synchronous_commit", "off", PGC_SUSET, PGC_S_SESSION);
    for (int i = 0; i < n; i++)
    {
        Oid         types[4] = {INT4OID, INT8OID, INT8OID, INT8OID};
        Datum       vals[4] = {Int32GetDatum((int32) ids[i]), Int64GetDatum(sys[i]),
                               Int64GetDatum(incs[i]), Int64GetDatum(lsn[i])};

        if (SPI_execute_with_args("INSERT INTO svcbus_internal.paxos_peers AS p (node, sysid, inc, lsn)"
                                  " VALUES ($1, $2, $3, $4) ON CONFLICT (node) DO UPDATE"
                                  " SET sysid = EXCLUDED.sysid, inc = EXCLUDED.inc, lsn = EXCLUDED.lsn",
                                  4, types, vals, NULL, false, 0) != SPI_OK_INSERT)
            elog(ERROR, "svcbus paxos: could not save what this node saw of its peers");
    }
    SPI_finish();
    PopActiveSnapshot();
    CommitTransactionCommand();
    MemoryContextSwitchTo(loop_cxt);
}

/* At start: the durable recovering mark, and what we saw of the peers. */
static void
load_lost_state(void)
{
    bool        recovering = false;
    int64       inc = 0;

    StartTransactionCommand();
    PushActiveSnapshot(GetTransactionSnapshot());
    SPI_connect();
    if (SPI_execute("SELECT recovering, incarnation FROM svcbus_internal.paxos_acceptor WHERE id = 1",
                    true, 1) == SPI_OK_SELECT && SPI_processed == 1)
    {
        bool        isnull;
        Datum       d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

        recovering = !isnull && DatumGetBool(d);
        d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
        inc = isnull ? 0 : DatumGetInt64(d);
    }
    svcbus_paxos_load_seen(cs);
    SPI_finish();
    PopActiveSnapshot();
    CommitTransactionCommand();
    MemoryContextSwitchTo(loop_cxt);
    LWLockAcquire(cs->lock, LW_EXCLUSIVE);
    if (recovering)
        cs->recovering = true;
    cs->incarnation = inc;
    n_recoveries = cs->recoveries;
    LWLockRelease(cs->lock);
}

/* ---------------------------------------------------------------------
 * Learner
 */

static void
deliver(const SvcbusEnvelope *env, const SvcbusClusterResult *res, void *arg)
{
    SvcbusClusterReq *reqs = svcbus_cluster_reqs();

    if (env->req >= (uint32) cs->nreqs)
        return;
    /* cs->lock is held exclusively by the caller. */
    if (reqs[env->req].state == SVCBUS_REQ_WAITING && reqs[env->req].seq == env->seq)
    {
        reqs[env->req].result = *res;
        reqs[env->req].state = SVCBUS_REQ_DONE;
    }
}

/* Apply one chosen batch; caller is in a transaction. */
static void
apply_one(int64 slot, const uint8 *data, size_t len, int64 *applied_time, uint64 *digest)
{
    SvcbusClusterState st;
    int64       t;
    uint8       sb[8];

    st.registry = svcbus_cluster_registry();
    st.locks = svcbus_cluster_locks();
    if (svcbus_batch_validate(data, len, &t, NULL))
    {
        LWLockAcquire(cs->lock, LW_EXCLUSIVE);
        LWLockAcquire(cs->sm_lock, LW_EXCLUSIVE);
        (void) svcbus_cluster_apply_batch(&st, slot, data, len, (uint16) me, deliver, NULL);
        LWLockRelease(cs->sm_lock);
        LWLockRelease(cs->lock);
        *applied_time = Max(*applied_time, t);
    }
    else
        elog(WARNING, "svcbus paxos: slot " INT64_FORMAT " holds a malformed batch; skipped", slot);
    for (int i = 0; i < 8; i++)
        sb[i] = (uint8) ((uint64) slot >> (8 * i));
    *digest = svcbus_digest_update(*digest, sb, 8);
    *digest = svcbus_digest_update(*digest, data, len);
}

/*
 * Apply chosen slots in order.  replay: at start, slots up to `upto` are
 * known chosen (they were applied before the restart) whatever their
 * ballot.  Otherwise a slot is applied when it is within the latest
 * leader's commit index and our row holds that leader's value.
 */
static bool
learner_apply(bool replay, int64 upto)
{
    int64       applied, commit, lb, applied_time;
    uint64      digest;
    int64       before;
    uint64      rev_before = 0, rev_after = 0;
    Oid         types[2] = {INT8OID, INT8OID};
    Datum       vals[2];

    LWLockAcquire(cs->lock, LW_SHARED);
    applied = cs->applied;
    commit = replay ? upto : cs->commit;
    lb = cs->leader_ballot;
    applied_time = cs->applied_time;
    digest = cs->applied_digest;
    LWLockRelease(cs->lock);
    if (applied >= commit)
        return false;
    before = applied;

    vals[0] = Int64GetDatum(applied + 1);
    vals[1] = Int64GetDatum(Min(commit, applied + APPLY_CHUNK));
    StartTransactionCommand();
    PushActiveSnapshot(GetTransactionSnapshot());
    SPI_connect();
    SetConfigOption("synchronous_commit", "off", PGC_SUSET, PGC_S_SESSION);
    if (SPI_execute_with_args("SELECT slot, ballot, value FROM svcbus_internal.paxos_log"
                              " WHERE slot BETWEEN $1 AND $2 ORDER BY slot",
                              2, types, vals, NULL, true, 0) != SPI_OK_SELECT)
        elog(ERROR, "svcbus paxos: could not read the log");
    LWLockAcquire(cs->sm_lock, LW_SHARED);
    rev_before = (uint64) svcbus_reg_revision(svcbus_cluster_registry());
    LWLockRelease(cs->sm_lock);
    for (uint64 i = 0; i < SPI_processed; i++)
    {
        HeapTuple   tup = SPI_tuptable->vals[i];
        TupleDesc   d = SPI_tuptable->tupdesc;
        bool        isnull;
        int64       slot = DatumGetInt64(SPI_getbinval(tup, d, 1, &isnull));
        int64       ballot = DatumGetInt64(SPI_getbinval(tup, d, 2, &isnull));
        bytea      *v;

        if (slot != applied + 1 || (!replay && ballot != lb))
            break;
        v = DatumGetByteaPP(SPI_getbinval(tup, d, 3, &isnull));
        apply_one(slot, (const uint8 *) VARDATA_ANY(v), VARSIZE_ANY_EXHDR(v), &applied_time, &digest);
        applied = slot;
        LWLockAcquire(cs->lock, LW_EXCLUSIVE);
        cs->applied = applied;
        cs->applied_time = applied_time;
        cs->applied_digest = digest;
        if (cs->match < applied && cs->match_ballot == lb)
            cs->match = applied;
        LWLockRelease(cs->lock);
    }
    LWLockAcquire(cs->sm_lock, LW_SHARED);
    rev_after = (uint64) svcbus_reg_revision(svcbus_cluster_registry());
    LWLockRelease(cs->sm_lock);
    if (applied > before && !replay)
    {
        Datum       uv[3] = {Int64GetDatum(applied), Int64GetDatum(applied_time), Int64GetDatum((int64) digest)};
        Oid         ut[3] = {INT8OID, INT8OID, INT8OID};

        if (SPI_execute_with_args("UPDATE svcbus_internal.paxos_learner SET applied = $1,"
                                  " applied_time = $2, digest = $3 WHERE id = 1",
                                  3, ut, uv, NULL, false, 0) != SPI_OK_UPDATE)
            elog(ERROR, "svcbus paxos: could not store the applied index");
        if (rev_after != rev_before)
        {
            char        payload[32];

            snprintf(payload, sizeof(payload), UINT64_FORMAT, rev_after);
            Async_Notify("svcbus_registry", payload);
        }
    }
    SPI_finish();
    PopActiveSnapshot();
    CommitTransactionCommand();
    MemoryContextSwitchTo(loop_cxt);
    if (applied > before)
        ConditionVariableBroadcast(&cs->applied_cv);
    return applied > before && applied < commit;
}

/*
 * At start with fresh shared memory: put our snapshot into the arenas (the
 * replay goes on from the slot after it).
 */
static void
load_own_snapshot(void)
{
    SvcbusSnapArea areas[SVCBUS_SNAPSHOT_AREAS];
    SvcbusSnapMeta m;
    SvcbusSnapRc rc;
    int         n = svcbus_cluster_state_areas(areas, false);
    bool        isnull;
    bytea      *img;

    StartTransactionCommand();
    PushActiveSnapshot(GetTransactionSnapshot());
    SPI_connect();
    if (SPI_execute("SELECT slot, image FROM svcbus_internal.paxos_snapshot WHERE id = 1", true, 1) != SPI_OK_SELECT ||
        SPI_processed != 1)
        elog(ERROR, "svcbus paxos: could not read this node's snapshot");
    if (DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)) > 0)
    {
        img = DatumGetByteaPP(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
        rc = svcbus_snapshot_check((const uint8 *) VARDATA_ANY(img), VARSIZE_ANY_EXHDR(img), &m, areas, n);
        if (rc != SVCBUS_SNAP_OK)
            ereport(ERROR,
                    (errcode(ERRCODE_DATA_CORRUPTED),
                     errmsg("svcbus paxos: this node's snapshot cannot be loaded: %s", svcbus_snapshot_rc_name(rc)),
                     errhint("svcbus.cluster_max_keys, svcbus.cluster_memory, svcbus.cluster_history and svcbus.max_locks must be what they were when it was taken.")));
        arenas_from_snapshot((const uint8 *) VARDATA_ANY(img), VARSIZE_ANY_EXHDR(img), areas, n, &m);
        elog(LOG, "svcbus paxos: node %d loaded its snapshot at slot " INT64_FORMAT, me, m.slot);
    }
    SPI_finish();
    PopActiveSnapshot();
    CommitTransactionCommand();
    MemoryContextSwitchTo(loop_cxt);
}

/* At start with fresh shared memory: replay what this node applied before. */
static void
learner_replay(void)
{
    int64       upto = 0;
    bool        done;

    LWLockAcquire(cs->lock, LW_SHARED);
    done = cs->replayed;
    LWLockRelease(cs->lock);
    if (done)
        return;

    StartTransactionCommand();
    PushActiveSnapshot(GetTransactionSnapshot());
    SPI_connect();
    if (SPI_execute("SELECT applied FROM svcbus_internal.paxos_learner WHERE id = 1", true, 1) == SPI_OK_SELECT &&
        SPI_processed == 1)
    {
        bool        isnull;
        Datum       d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

        upto = isnull ? 0 : DatumGetInt64(d);
    }
    SPI_finish();
    PopActiveSnapshot();
    CommitTransactionCommand();
    MemoryContextSwitchTo(loop_cxt);

    load_own_snapshot();
    svcbus_worker_set_detail("replaying the applied log");
    while (learner_apply(true, upto))
        CHECK_FOR_INTERRUPTS();
    LWLockAcquire(cs->lock, LW_EXCLUSIVE);
    cs->replayed = true;
    LWLockRelease(cs->lock);
    elog(LOG, "svcbus paxos: node %d replayed its log up to slot " INT64_FORMAT, me, upto);
}

/* ---------------------------------------------------------------------
 * Main loop
 */

static void
wait_for_events(long timeout_ms)
{
    WaitEventSet *set = CreateWaitEventSet(CurrentMemoryContext, npeers + 2);
    WaitEvent   ev[SVCBUS_CLUSTER_MAX_NODES + 2];

    AddWaitEventToSet(set, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
    AddWaitEventToSet(set, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
    for (int i = 0; i < npeers; i++)
    {
        Peer       *p = &peers[i];
        uint32      events;

        if (p->conn == NULL || p->state == CONN_DOWN || PQsocket(p->conn) < 0)
            continue;
        events = WL_SOCKET_READABLE;
        if (p->want_write)
            events |= WL_SOCKET_WRITEABLE;
        AddWaitEventToSet(set, events, PQsocket(p->conn), NULL, NULL);
    }
    (void) WaitEventSetWait(set, Max(timeout_ms, 1), ev, lengthof(ev), PG_WAIT_EXTENSION);
    FreeWaitEventSet(set);
    ResetLatch(MyLatch);
    CHECK_FOR_INTERRUPTS();
    if (ConfigReloadPending)
    {
        ConfigReloadPending = false;
        ProcessConfigFile(PGC_SIGHUP);
    }
}

void
svcbus_paxos_worker_main(Datum main_arg)
{
    int         slot = DatumGetInt32(main_arg);

    pqsignal(SIGHUP, SignalHandlerForConfigReload);
    pqsignal(SIGTERM, die);
    BackgroundWorkerUnblockSignals();
    svcbus_worker_attach(slot, "starting");

    cs = svcbus_cluster();
    if (cs == NULL || cs->me == 0)
    {
        svcbus_worker_set_detail("not a cluster member (svcbus.cluster_node_id / svcbus.cluster_nodes)");
        for (;;)
        {
            svcbus_worker_heartbeat();
            svcbus_worker_wait(60000);
        }
    }
    BackgroundWorkerInitializeConnection(svcbus_database, NULL, 0);
    me = cs->me;
    npeers = cs->npeers;
    quorum = npeers / 2 + 1;
    srandom((unsigned int) (MyProcPid ^ (GetCurrentTimestamp() & 0xffffffff)));
    for (int i = 0; i < npeers; i++)
    {
        memset(&peers[i], 0, sizeof(Peer));
        peers[i].id = cs->peers[i].id;
        peers[i].conninfo = MemoryContextStrdup(TopMemoryContext, cs->peers[i].conninfo);
    }
    initStringInfo(&fwd);

    loop_cxt = AllocSetContextCreate(TopMemoryContext, "svcbus paxos loop", ALLOCSET_DEFAULT_SIZES);
    MemoryContextSwitchTo(loop_cxt);
    learner_replay();
    load_lost_state();
    load_snapshot_state();

    LWLockAcquire(cs->lock, LW_EXCLUSIVE);
    cs->worker_procno = MyProc->pgprocno;
    cs->role = SVCBUS_ROLE_FOLLOWER;
    if (cs->leader == me)
        cs->leader = 0;
    seen_ballot(cs->promised);
    LWLockRelease(cs->lock);
    role = SVCBUS_ROLE_FOLLOWER;
    election_deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), random_election_ms());

    for (;;)
    {
        TimestampTz now = GetCurrentTimestamp();
        long        timeout = svcbus_cluster_heartbeat_ms;
        bool        more;

        MemoryContextSwitchTo(loop_cxt);

        for (int i = 0; i < npeers; i++)
        {
            peer_connect(&peers[i], now);
            peer_read(&peers[i], now);
        }

        {
            bool        recovering;

            LWLockAcquire(cs->lock, LW_SHARED);
            recovering = cs->recovering;
            LWLockRelease(cs->lock);
            if (recovering && role != SVCBUS_ROLE_RECOVERING)
            {
                if (role != SVCBUS_ROLE_FOLLOWER)
                    become_follower(my_ballot);
                role = SVCBUS_ROLE_RECOVERING;
                rec_active = false;
            }
        }

        reads_scan();
        if (role == SVCBUS_ROLE_LEADER)
        {
            leader_drive(now);
            if (role == SVCBUS_ROLE_LEADER)
                leader_reads(now);
        }
        else if (role == SVCBUS_ROLE_RECOVERING)
        {
            recovery_drive(now);
            if (role == SVCBUS_ROLE_RECOVERING)
                follower_forward(now);
        }
        else
        {
            TimestampTz contact;

            LWLockAcquire(cs->lock, LW_SHARED);
            contact = cs->last_contact;
            LWLockRelease(cs->lock);
            if (role == SVCBUS_ROLE_FOLLOWER &&
                !TimestampDifferenceExceeds(contact, now, svcbus_cluster_election_timeout_ms))
                election_deadline = TimestampTzPlusMilliseconds(now, random_election_ms());
            if (now >= election_deadline)
                start_election(now);
            else if (role == SVCBUS_ROLE_CANDIDATE)
            {
                /* Peers that connected after the election started. */
                for (int i = 0; i < npeers; i++)
                    if (!peers[i].promised && peer_can_send(&peers[i]) && peers[i].qlen == 0)
                        send_prepare(&peers[i], now);
            }
            if (role != SVCBUS_ROLE_LEADER)
                follower_forward(now);
        }

        if (role != SVCBUS_ROLE_LEADER)
            follower_reads(now);
        save_seen(now);
        more = learner_apply(false, 0);
        if (!more)
            take_snapshot();
        if (role == SVCBUS_ROLE_FOLLOWER || role == SVCBUS_ROLE_CANDIDATE)
            check_stuck(now);
        if (more)
            timeout = 0;
        if (role == SVCBUS_ROLE_LEADER && last_slot > commit_idx)
            timeout = Min(timeout, 20);

        publish_role();
        update_detail();
        svcbus_worker_heartbeat();
        MemoryContextReset(loop_cxt);
        if (timeout > 0)
            wait_for_events(timeout);
    }
}
