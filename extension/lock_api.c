/*
 * extension/lock_api.c
 *      SQL functions of the lock service: lock, try_lock, unlock, renew,
 *      lock_xact, fence, acquire_permits, release_permits, campaign,
 *      leader, resign, lock_key, and the rows of svcbus.locks.
 *
 * Every state change is one command of bus/lock_sm.c run under the lock
 * table's LWLock; grants made by a command wake their waiters' latches.
 * A waiter sleeps on its latch until granted, its wait ends (NULL), the
 * next lease expiry (it runs the expiry itself, so leases end on time
 * without a worker), or deadlock_timeout (then it checks the wait-for graph
 * and raises 40P01 when it is on a cycle).  An error or cancel while
 * waiting withdraws the request.
 *
 * Owners: the calling session by default ("pid:<pid>:<start>"), released
 * when the session ends; or an explicit owner name for clients that come
 * and go, which requires a ttl (nothing else would ever release it).
 *
 * Physical advisory locks: a session-owned lock without a lease also takes
 * the session-level advisory lock on svcbus.lock_key(name) (lock_xact:
 * the transaction-level one), so pg_locks shows it and plain
 * pg_advisory_lock users on the same key are excluded.  Leases (which may
 * end while their session lives, or outlive it) are held as advisory locks
 * by the lock worker on their owner's behalf (bgworkers/lock_worker.c);
 * granting, ending or releasing a lease wakes it.
 */
#include "postgres.h"

#include <math.h>

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "commands/async.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lock.h"
#include "storage/proc.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "bus/locks.h"
#include "bus/queue.h"
#include "extension/svcbus.h"

#define MAX_TTL_MS   (7LL * 24 * 3600 * 1000)
#define MAX_WAIT_MS  (24LL * 3600 * 1000)

static bool exit_hook_set = false;
static List *xact_locks = NIL;      /* names (with tokens) of lock_xact holds */
static bool xact_cb_set = false;

typedef struct XactLock
{
    char        name[SVCBUS_LOCK_NAME_MAX];
    uint64_t    token;
    bool        shared;
} XactLock;

static int64
now_ms(void)
{
    return (int64) (GetCurrentTimestamp() / 1000);
}

static void
session_owner(char *buf)
{
    snprintf(buf, SVCBUS_LOCK_OWNER_MAX, "pid:%d:%lld", MyProcPid, (long long) MyStartTime);
}

#define wake(res) svcbus_lock_wake(res)

/* Session end: give up everything this session owns or waits for. */
static void
release_session(int code, Datum arg)
{
    char        owner[SVCBUS_LOCK_OWNER_MAX];
    SvcbusLockResult res;

    if (svcbus_lock_table() == NULL)
        return;
    session_owner(owner);
    LWLockAcquire(svcbus_lock_lwlock(), LW_EXCLUSIVE);
    svcbus_lock_release_owner(svcbus_lock_table(), owner, now_ms(), &res);
    LWLockRelease(svcbus_lock_lwlock());
    wake(&res);
}

static void
check_name(const char *what, const char *name)
{
    size_t      len = strlen(name);

    if (len == 0 || len >= SVCBUS_LOCK_NAME_MAX)
        ereport(ERROR,
                (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                 errmsg("%s must have 1 to %d bytes", what, SVCBUS_LOCK_NAME_MAX - 1)));
}

static char *
text_arg(FunctionCallInfo fcinfo, int n, const char *what)
{
    char       *s = svcbus_text_arg(fcinfo, n, what);

    check_name(what, s);
    return s;
}

static int64
ms_arg(FunctionCallInfo fcinfo, int n, const char *what, int64 min_ms, int64 max_ms)
{
    double      secs = PG_GETARG_FLOAT8(n);
    double      ms = rint(secs * 1000.0);

    if (isnan(secs) || isinf(secs) || ms < (double) min_ms || ms > (double) max_ms)
        ereport(ERROR,
                (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                 errmsg("%s of %g seconds is out of range", what, secs),
                 errdetail("It must be between %g and %g seconds.", min_ms / 1000.0, max_ms / 1000.0)));
    return (int64) ms;
}

static SvcbusLockMode
mode_arg(FunctionCallInfo fcinfo, int n)
{
    char       *m;

    if (PG_ARGISNULL(n))
        return SVCBUS_LOCK_EXCLUSIVE;
    m = text_to_cstring(PG_GETARG_TEXT_PP(n));
    if (strcmp(m, "exclusive") == 0)
        return SVCBUS_LOCK_EXCLUSIVE;
    if (strcmp(m, "shared") == 0)
        return SVCBUS_LOCK_SHARED;
    ereport(ERROR,
            (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
             errmsg("invalid lock mode \"%s\"", m),
             errhint("Use \"exclusive\" or \"shared\".")));
    return SVCBUS_LOCK_EXCLUSIVE;   /* not reached */
}

/* ---------------------------------------------------------------------
 * Stored leases of named owners (svcbus_internal.leases)
 * ------------------------------------------------------------------- */

static void
lease_sql(const char *sql, int nargs, Oid *types, Datum *values)
{
    SvcbusAsOwner as;

    svcbus_enter_owner(&as);
    SPI_connect();
    if (SPI_execute_with_args(sql, nargs, types, values, NULL, false, 0) < 0)
        elog(ERROR, "svcbus: writing a lease failed");
    SPI_finish();
    svcbus_leave_owner(&as);
}

/* Remember a lease of a named owner (durable when the caller commits). */
static void
lease_store(const char *name, const char *owner, SvcbusLockKind kind, SvcbusLockMode mode,
            int32 permits, int32 limit, uint64 token, int64 expires_ms)
{
    Oid         types[8] = {TEXTOID, TEXTOID, INT2OID, INT2OID, INT4OID, INT4OID, INT8OID, TIMESTAMPTZOID};
    Datum       values[8];

    values[0] = CStringGetTextDatum(name);
    values[1] = CStringGetTextDatum(owner);
    values[2] = Int16GetDatum((int16) kind);
    values[3] = Int16GetDatum((int16) mode);
    values[4] = Int32GetDatum(permits);
    values[5] = Int32GetDatum(limit);
    values[6] = Int64GetDatum((int64) token);
    values[7] = TimestampTzGetDatum((TimestampTz) expires_ms * 1000);
    lease_sql("INSERT INTO svcbus_internal.leases VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
              " ON CONFLICT (name, owner) DO UPDATE SET kind = EXCLUDED.kind, mode = EXCLUDED.mode,"
              " permits = EXCLUDED.permits, lim = EXCLUDED.lim, token = EXCLUDED.token,"
              " expires_at = EXCLUDED.expires_at", 8, types, values);
}

static void
lease_forget(const char *name, const char *owner)
{
    Oid         types[2] = {TEXTOID, TEXTOID};
    Datum       values[2];

    values[0] = CStringGetTextDatum(name);
    values[1] = CStringGetTextDatum(owner);
    lease_sql("DELETE FROM svcbus_internal.leases WHERE name = $1 AND owner = $2",
              2, types, values);
}

static void
lease_renew(const char *name, const char *owner, int64 expires_ms)
{
    Oid         types[3] = {TEXTOID, TEXTOID, TIMESTAMPTZOID};
    Datum       values[3];

    values[0] = CStringGetTextDatum(name);
    values[1] = CStringGetTextDatum(owner);
    values[2] = TimestampTzGetDatum((TimestampTz) expires_ms * 1000);
    lease_sql("UPDATE svcbus_internal.leases SET expires_at = $3 WHERE name = $1 AND owner = $2",
              3, types, values);
}

static bool
is_session_owner(const char *owner)
{
    return strncmp(owner, "pid:", 4) == 0;
}

/*
 * Once per server start (shared memory creation): put the stored leases
 * that have not ended back into the lock table, with their old tokens, and
 * drop the ended ones.  Serialised by a heavyweight lock; runs before this
 * backend's first lock command, so no grant can slip in before them.
 */
static void
leases_load(void)
{
    LOCKTAG     tag;
    SvcbusAsOwner as;
    int64       now = now_ms();
    Datum       arg = TimestampTzGetDatum(GetCurrentTimestamp());
    Oid         type = TIMESTAMPTZOID;

    if (svcbus_lock_leases_loaded())
        return;
    SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, 0x53564255, 0, 6);
    (void) LockAcquire(&tag, ExclusiveLock, false, false);
    if (!svcbus_lock_leases_loaded())
    {
        svcbus_enter_owner(&as);
        SPI_connect();
        if (SPI_execute_with_args("SELECT name, owner, kind, mode, permits, lim, token, expires_at"
                                  " FROM svcbus_internal.leases WHERE expires_at > $1",
                                  1, &type, &arg, NULL, true, 0) != SPI_OK_SELECT)
            elog(ERROR, "svcbus: reading stored leases failed");
        LWLockAcquire(svcbus_lock_lwlock(), LW_EXCLUSIVE);
        for (uint64 i = 0; i < SPI_processed; i++)
        {
            HeapTuple   tup = SPI_tuptable->vals[i];
            TupleDesc   d = SPI_tuptable->tupdesc;
            bool        isnull;
            int64       exp_ms = DatumGetTimestampTz(SPI_getbinval(tup, d, 8, &isnull)) / 1000;

            if (exp_ms <= now)
                continue;
            (void) svcbus_lock_restore(svcbus_lock_table(), SPI_getvalue(tup, d, 1),
                                       (SvcbusLockKind) DatumGetInt16(SPI_getbinval(tup, d, 3, &isnull)),
                                       SPI_getvalue(tup, d, 2),
                                       (SvcbusLockMode) DatumGetInt16(SPI_getbinval(tup, d, 4, &isnull)),
                                       DatumGetInt32(SPI_getbinval(tup, d, 5, &isnull)),
                                       DatumGetInt32(SPI_getbinval(tup, d, 6, &isnull)),
                                       (uint64) DatumGetInt64(SPI_getbinval(tup, d, 7, &isnull)),
                                       exp_ms);
        }
        LWLockRelease(svcbus_lock_lwlock());
        if (SPI_execute_with_args("DELETE FROM svcbus_internal.leases WHERE expires_at <= $1",
                                  1, &type, &arg, NULL, false, 0) < 0)
            elog(ERROR, "svcbus: dropping ended leases failed");
        SPI_finish();
        svcbus_leave_owner(&as);
        svcbus_lock_set_leases_loaded();
        svcbus_lock_wake_worker();
    }
    LockRelease(&tag, ExclusiveLock, false);
}

static void
prepare(void)
{
    svcbus_queue_check_database();
    if (svcbus_lock_table() == NULL)
        svcbus_shmem_require();
    if (!exit_hook_set)
    {
        before_shmem_exit(release_session, (Datum) 0);
        exit_hook_set = true;
    }
    leases_load();
}

#define lock_key(name) svcbus_lock_key_of(name)

static void
advisory_tag(LOCKTAG *tag, const char *name)
{
    uint64      k = lock_key(name);

    SET_LOCKTAG_ADVISORY(*tag, MyDatabaseId, (uint32) (k >> 32), (uint32) k, 1);
}

static void
raise_rc(SvcbusLockRc rc, const char *name)
{
    switch (rc)
    {
        case SVCBUS_LOCK_E_FULL:
            ereport(ERROR,
                    (errcode(ERRCODE_SVCBUS_LOCK_CAPACITY),
                     errmsg("too many svcbus locks"),
                     errhint("Raise svcbus.max_locks (currently %d) and restart the server.",
                             svcbus_max_locks)));
            break;
        case SVCBUS_LOCK_E_KIND:
            ereport(ERROR,
                    (errcode(ERRCODE_WRONG_OBJECT_TYPE),
                     errmsg("\"%s\" is in use as another kind of lock", name),
                     errdetail("A name is either a lock or a semaphore.")));
            break;
        case SVCBUS_LOCK_E_LIMIT:
            ereport(ERROR,
                    (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                     errmsg("invalid permits for semaphore \"%s\"", name),
                     errdetail("Permits must be between 1 and the limit, and the limit must match the one in use.")));
            break;
        case SVCBUS_LOCK_E_UPGRADE:
            ereport(ERROR,
                    (errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
                     errmsg("cannot upgrade shared lock \"%s\" to exclusive", name),
                     errhint("Release the shared lock first.")));
            break;
        default:
            elog(ERROR, "unexpected svcbus lock result %d", rc);
    }
}

/*
 * End the leases that ended by now, holding the table's LWLock
 * exclusively; the lock worker is woken to drop their advisory locks.  The
 * caller wakes the waiters granted in *res after releasing the LWLock.
 */
static void
expire_locked(int64 now, SvcbusLockResult *res)
{
    if (svcbus_lock_expire(svcbus_lock_table(), now, res) > 0)
        svcbus_lock_wake_worker();
}

/*
 * The common acquire path.  Returns the token, or 0 when not granted
 * within wait_ms (wait_ms < 0: forever; 0: do not wait).
 */
static uint64
acquire(const char *name, SvcbusLockKind kind, SvcbusLockMode mode, int32 permits,
        int32 limit, int64 ttl_ms, int64 wait_ms, const char *owner)
{
    SvcbusLockTable *t = svcbus_lock_table();
    SvcbusLockResult res;
    SvcbusLockRc rc;
    int32       req;
    uint64      token = 0;
    int64       start = now_ms();
    int64       deadline = wait_ms < 0 ? 0 : start + wait_ms;
    bool        checked_deadlock = false;

    {
        SvcbusLockResult ex;

        LWLockAcquire(svcbus_lock_lwlock(), LW_EXCLUSIVE);
        expire_locked(start, &ex);      /* ended leases first */
        rc = svcbus_lock_acquire(t, name, kind, owner, mode, permits, limit, ttl_ms, start,
                                 wait_ms != 0, MyProc->pgprocno, &res);
        LWLockRelease(svcbus_lock_lwlock());
        wake(&ex);
    }
    if (rc == SVCBUS_LOCK_OK)
        return res.token;
    if (rc == SVCBUS_LOCK_BUSY)
        return 0;
    if (rc != SVCBUS_LOCK_QUEUED)
        raise_rc(rc, name);
    req = res.req;

    PG_TRY();
    {
        for (;;)
        {
            int64       now = now_ms();
            int64       next;
            long        timeout;
            const SvcbusLockReq *q;
            SvcbusLockResult ex;

            LWLockAcquire(svcbus_lock_lwlock(), LW_EXCLUSIVE);
            expire_locked(now, &ex);
            q = svcbus_lock_req(t, req);
            if (q != NULL && q->granted)
            {
                token = q->token;
                LWLockRelease(svcbus_lock_lwlock());
                wake(&ex);
                break;
            }
            if (deadline != 0 && now >= deadline)
            {
                SvcbusLockResult can;

                svcbus_lock_cancel(t, req, now, &can);
                LWLockRelease(svcbus_lock_lwlock());
                wake(&ex);
                wake(&can);
                break;
            }
            if (!checked_deadlock && now - start >= DeadlockTimeout)
            {
                checked_deadlock = true;
                if (svcbus_lock_in_deadlock(t, req))
                {
                    SvcbusLockResult can;

                    svcbus_lock_cancel(t, req, now, &can);
                    LWLockRelease(svcbus_lock_lwlock());
                    wake(&ex);
                    wake(&can);
                    req = -1;
                    ereport(ERROR,
                            (errcode(ERRCODE_T_R_DEADLOCK_DETECTED),
                             errmsg("deadlock detected waiting for svcbus lock \"%s\"", name),
                             errdetail("A cycle of svcbus lock waiters includes this session.")));
                }
            }
            next = svcbus_lock_next_expiry(t);
            LWLockRelease(svcbus_lock_lwlock());
            wake(&ex);

            timeout = 60000;
            if (deadline != 0)
                timeout = Min(timeout, deadline - now);
            if (next != 0)
                timeout = Min(timeout, Max(next - now, 1));
            if (!checked_deadlock)
                timeout = Min(timeout, Max(start + DeadlockTimeout - now, 1));
            (void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
                             Max(timeout, 1), PG_WAIT_EXTENSION);
            ResetLatch(MyLatch);
            CHECK_FOR_INTERRUPTS();
        }
    }
    PG_CATCH();
    {
        /* Cancelled or failed while waiting: withdraw (or give back). */
        if (req >= 0)
        {
            SvcbusLockResult can;
            const SvcbusLockReq *q;

            LWLockAcquire(svcbus_lock_lwlock(), LW_EXCLUSIVE);
            q = svcbus_lock_req(t, req);
            if (q != NULL && q->granted)
                svcbus_lock_release(t, name, owner, q->token, now_ms(), &can);
            else
                svcbus_lock_cancel(t, req, now_ms(), &can);
            LWLockRelease(svcbus_lock_lwlock());
            wake(&can);
        }
        PG_RE_THROW();
    }
    PG_END_TRY();
    return token;
}

/* Release with a token; false (nothing changed) when not held. */
static bool
release(const char *name, const char *owner, uint64 token)
{
    SvcbusLockResult res;
    SvcbusLockRc rc;

    SvcbusLockResult ex;
    int64       now = now_ms();

    LWLockAcquire(svcbus_lock_lwlock(), LW_EXCLUSIVE);
    expire_locked(now, &ex);
    rc = svcbus_lock_release(svcbus_lock_table(), name, owner, token, now, &res);
    LWLockRelease(svcbus_lock_lwlock());
    wake(&ex);
    wake(&res);
    return rc == SVCBUS_LOCK_OK;
}

/*
 * Take the physical advisory lock of a lock without a lease (session or
 * transaction level).  With wait, waits in the lock manager behind plain
 * pg_advisory_lock holders; without, gives the svcbus grant back and
 * returns false when one holds it.
 */
static bool
take_physical(const char *name, SvcbusLockMode mode, bool session, bool wait,
              uint64 token, const char *owner)
{
    LOCKTAG     tag;
    LockAcquireResult r = LOCKACQUIRE_NOT_AVAIL;

    advisory_tag(&tag, name);
    PG_TRY();
    {
        r = LockAcquire(&tag, mode == SVCBUS_LOCK_SHARED ? ShareLock : ExclusiveLock,
                        session, !wait);
    }
    PG_CATCH();
    {
        (void) release(name, owner, token);
        PG_RE_THROW();
    }
    PG_END_TRY();
    if (r == LOCKACQUIRE_NOT_AVAIL)
    {
        (void) release(name, owner, token);
        return false;
    }
    return true;
}

static void
drop_physical(const char *name, SvcbusLockMode mode)
{
    LOCKTAG     tag;

    advisory_tag(&tag, name);
    (void) LockRelease(&tag, mode == SVCBUS_LOCK_SHARED ? ShareLock : ExclusiveLock, true);
}

/*
 * lock(name, ttl, wait, mode, owner) and try_lock (wait 0): the token, or
 * NULL when not granted in time.
 */
static Datum
lock_common(FunctionCallInfo fcinfo, bool may_wait)
{
    char       *name = text_arg(fcinfo, 0, "lock name");
    int64       ttl_ms = PG_ARGISNULL(1) ? 0 : ms_arg(fcinfo, 1, "ttl", 1, MAX_TTL_MS);
    int64       wait_ms = !may_wait ? 0 : PG_ARGISNULL(2) ? -1 :
        ms_arg(fcinfo, 2, "wait", 0, MAX_WAIT_MS);
    int         mode_arg_no = may_wait ? 3 : 2;
    int         owner_arg_no = may_wait ? 4 : 3;
    SvcbusLockMode mode = mode_arg(fcinfo, mode_arg_no);
    char        owner[SVCBUS_LOCK_OWNER_MAX];
    bool        explicit_owner = !PG_ARGISNULL(owner_arg_no);
    uint64      token;

    prepare();
    if (explicit_owner)
    {
        char       *o = text_to_cstring(PG_GETARG_TEXT_PP(owner_arg_no));

        if (strlen(o) == 0 || strlen(o) >= SVCBUS_LOCK_OWNER_MAX || strncmp(o, "pid:", 4) == 0)
            ereport(ERROR,
                    (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                     errmsg("invalid lock owner \"%s\"", o),
                     errdetail("An owner has 1 to %d bytes and does not start with \"pid:\".",
                               SVCBUS_LOCK_OWNER_MAX - 1)));
        if (ttl_ms == 0)
            ereport(ERROR,
                    (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                     errmsg("a lock with an explicit owner needs a ttl"),
                     errdetail("Nothing else would ever release it.")));
        strlcpy(owner, o, sizeof(owner));
    }
    else
        session_owner(owner);

    token = acquire(name, SVCBUS_LOCK_KIND_LOCK, mode, 1, 0, ttl_ms, wait_ms, owner);
    if (token == 0)
        PG_RETURN_NULL();
    if (ttl_ms > 0)
        svcbus_lock_wake_worker();
    if (explicit_owner)
        lease_store(name, owner, SVCBUS_LOCK_KIND_LOCK, mode, 1, 0, token, now_ms() + ttl_ms);
    if (!explicit_owner && ttl_ms == 0 &&
        !take_physical(name, mode, true, may_wait, token, owner))
        PG_RETURN_NULL();
    PG_RETURN_INT64((int64) token);
}

PG_FUNCTION_INFO_V1(svcbus_lock);
Datum
svcbus_lock(PG_FUNCTION_ARGS)
{
    return lock_common(fcinfo, true);
}

PG_FUNCTION_INFO_V1(svcbus_try_lock);
Datum
svcbus_try_lock(PG_FUNCTION_ARGS)
{
    return lock_common(fcinfo, false);
}

/* unlock(name, token, owner) -> true, or false when not held (nothing changed). */
PG_FUNCTION_INFO_V1(svcbus_unlock);
Datum
svcbus_unlock(PG_FUNCTION_ARGS)
{
    char       *name = text_arg(fcinfo, 0, "lock name");
    uint64      token;
    char        owner[SVCBUS_LOCK_OWNER_MAX];
    bool        session;
    SvcbusLockMode mode = SVCBUS_LOCK_EXCLUSIVE;
    bool        leased = true;
    bool        ok;

    if (PG_ARGISNULL(1))
        ereport(ERROR,
                (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
                 errmsg("token must not be null")));
    token = (uint64) PG_GETARG_INT64(1);
    prepare();
    session = PG_ARGISNULL(2);
    if (session)
        session_owner(owner);
    else
        strlcpy(owner, text_to_cstring(PG_GETARG_TEXT_PP(2)), sizeof(owner));

    /* Note the holder's mode and lease before releasing (for the advisory lock). */
    LWLockAcquire(svcbus_lock_lwlock(), LW_SHARED);
    {
        SvcbusLockTable *t = svcbus_lock_table();
        int32       li = svcbus_lock_find(t, name);
        const SvcbusLockEntry *e = svcbus_lock_entry(t, li);

        if (e != NULL && e->kind == SVCBUS_LOCK_KIND_LOCK)
            for (int32 h = e->holders; h >= 0; h = svcbus_lock_req(t, h)->next)
            {
                const SvcbusLockReq *q = svcbus_lock_req(t, h);

                if (q->token == token && strcmp(q->owner, owner) == 0)
                {
                    mode = q->mode;
                    leased = q->ttl_ms > 0;
                }
            }
    }
    LWLockRelease(svcbus_lock_lwlock());

    /*
     * Drop the advisory lock before the svcbus release wakes the next
     * holder, so it does not then wait for us in the lock manager.  (leased
     * stays true when we hold nothing with that token.)
     */
    if (session && !leased)
        drop_physical(name, mode);
    ok = release(name, owner, token);
    if (ok && leased)
        svcbus_lock_wake_worker();      /* it holds the lease's advisory lock */
    if (ok && !session)
        lease_forget(name, owner);
    PG_RETURN_BOOL(ok);
}

/* renew(name, token, ttl, owner) -> new lease end; SB102 when not held. */
PG_FUNCTION_INFO_V1(svcbus_renew);
Datum
svcbus_renew(PG_FUNCTION_ARGS)
{
    char       *name = text_arg(fcinfo, 0, "lock name");
    uint64      token;
    int64       ttl_ms;
    char        owner[SVCBUS_LOCK_OWNER_MAX];
    SvcbusLockRc rc;
    int64       now = now_ms();
    SvcbusLockResult res;

    if (PG_ARGISNULL(1) || PG_ARGISNULL(2))
        ereport(ERROR,
                (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
                 errmsg("token and ttl must not be null")));
    token = (uint64) PG_GETARG_INT64(1);
    ttl_ms = ms_arg(fcinfo, 2, "ttl", 1, MAX_TTL_MS);
    prepare();
    if (PG_ARGISNULL(3))
        session_owner(owner);
    else
        strlcpy(owner, text_to_cstring(PG_GETARG_TEXT_PP(3)), sizeof(owner));
    LWLockAcquire(svcbus_lock_lwlock(), LW_EXCLUSIVE);
    expire_locked(now, &res);
    rc = svcbus_lock_renew(svcbus_lock_table(), name, owner, token, ttl_ms, now);
    LWLockRelease(svcbus_lock_lwlock());
    wake(&res);
    if (rc == SVCBUS_LOCK_OK)
    {
        svcbus_lock_wake_worker();
        if (!is_session_owner(owner))
            lease_renew(name, owner, now + ttl_ms);
    }
    if (rc == SVCBUS_LOCK_E_LIMIT)
        ereport(ERROR,
                (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                 errmsg("lock \"%s\" has no lease to renew", name),
                 errdetail("It was taken without a ttl and is held until unlocked.")));
    if (rc != SVCBUS_LOCK_OK)
        ereport(ERROR,
                (errcode(ERRCODE_SVCBUS_NOT_HELD),
                 errmsg("lock \"%s\" is not held with token %lld", name, (long long) token),
                 errdetail("Its lease may have expired, or another owner holds it.")));
    PG_RETURN_TIMESTAMPTZ(TimestampTzPlusMilliseconds(GetCurrentTimestamp(), ttl_ms));
}

/* fence(name, token): nothing, or SB101 when the token is not current. */
PG_FUNCTION_INFO_V1(svcbus_fence);
Datum
svcbus_fence(PG_FUNCTION_ARGS)
{
    char       *name = text_arg(fcinfo, 0, "lock name");
    uint64      token;
    SvcbusLockRc rc;
    SvcbusLockResult res;

    if (PG_ARGISNULL(1))
        ereport(ERROR,
                (errcode(ERRCODE_SVCBUS_STALE_TOKEN),
                 errmsg("fencing token for lock \"%s\" is missing", name)));
    token = (uint64) PG_GETARG_INT64(1);
    prepare();
    LWLockAcquire(svcbus_lock_lwlock(), LW_EXCLUSIVE);
    expire_locked(now_ms(), &res);
    rc = svcbus_lock_fence(svcbus_lock_table(), name, token);
    LWLockRelease(svcbus_lock_lwlock());
    wake(&res);
    if (rc != SVCBUS_LOCK_OK)
        ereport(ERROR,
                (errcode(ERRCODE_SVCBUS_STALE_TOKEN),
                 errmsg("fencing token %lld of lock \"%s\" is no longer current", (long long) token, name),
                 errdetail("The lock was released, its lease expired, or another holder took it.")));
    PG_RETURN_VOID();
}

/* Commit/abort of a transaction with lock_xact holds: release them. */
static void
xact_locks_cb(XactEvent event, void *arg)
{
    ListCell   *lc;
    char        owner[SVCBUS_LOCK_OWNER_MAX];

    if (event != XACT_EVENT_COMMIT && event != XACT_EVENT_ABORT &&
        event != XACT_EVENT_PARALLEL_COMMIT && event != XACT_EVENT_PARALLEL_ABORT)
        return;
    if (xact_locks == NIL)
        return;
    session_owner(owner);
    foreach(lc, xact_locks)
    {
        XactLock   *x = lfirst(lc);
        SvcbusLockResult res;

        LWLockAcquire(svcbus_lock_lwlock(), LW_EXCLUSIVE);
        svcbus_lock_release(svcbus_lock_table(), x->name, owner, x->token, now_ms(), &res);
        LWLockRelease(svcbus_lock_lwlock());
        wake(&res);
    }
    xact_locks = NIL;           /* the list lived in TopTransactionContext */
}

/* lock_xact(name, wait, mode): token held until the transaction ends, or NULL. */
PG_FUNCTION_INFO_V1(svcbus_lock_xact);
Datum
svcbus_lock_xact(PG_FUNCTION_ARGS)
{
    char       *name = text_arg(fcinfo, 0, "lock name");
    int64       wait_ms = PG_ARGISNULL(1) ? -1 : ms_arg(fcinfo, 1, "wait", 0, MAX_WAIT_MS);
    SvcbusLockMode mode = mode_arg(fcinfo, 2);
    char        owner[SVCBUS_LOCK_OWNER_MAX];
    uint64      token;
    XactLock   *x;
    MemoryContext old;

    prepare();
    if (!xact_cb_set)
    {
        RegisterXactCallback(xact_locks_cb, NULL);
        xact_cb_set = true;
    }
    session_owner(owner);
    token = acquire(name, SVCBUS_LOCK_KIND_LOCK, mode, 1, 0, 0, wait_ms, owner);
    if (token == 0)
        PG_RETURN_NULL();
    old = MemoryContextSwitchTo(TopTransactionContext);
    x = palloc0(sizeof(XactLock));
    strlcpy(x->name, name, sizeof(x->name));
    x->token = token;
    x->shared = mode == SVCBUS_LOCK_SHARED;
    xact_locks = lappend(xact_locks, x);
    MemoryContextSwitchTo(old);
    if (!take_physical(name, mode, false, wait_ms != 0, token, owner))
        PG_RETURN_NULL();       /* the callback finds nothing held: fine */
    PG_RETURN_INT64((int64) token);
}

/* acquire_permits(name, permits, limit, ttl, wait, owner) -> token or NULL. */
PG_FUNCTION_INFO_V1(svcbus_acquire_permits);
Datum
svcbus_acquire_permits(PG_FUNCTION_ARGS)
{
    char       *name = text_arg(fcinfo, 0, "semaphore name");
    int32       permits;
    int32       limit;
    int64       ttl_ms = PG_ARGISNULL(3) ? 0 : ms_arg(fcinfo, 3, "ttl", 1, MAX_TTL_MS);
    int64       wait_ms = PG_ARGISNULL(4) ? -1 : ms_arg(fcinfo, 4, "wait", 0, MAX_WAIT_MS);
    char        owner[SVCBUS_LOCK_OWNER_MAX];
    uint64      token;

    if (PG_ARGISNULL(1) || PG_ARGISNULL(2))
        ereport(ERROR,
                (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
                 errmsg("permits and limit must not be null")));
    permits = PG_GETARG_INT32(1);
    limit = PG_GETARG_INT32(2);
    prepare();
    if (PG_ARGISNULL(5))
        session_owner(owner);
    else
    {
        strlcpy(owner, text_to_cstring(PG_GETARG_TEXT_PP(5)), sizeof(owner));
        if (ttl_ms == 0)
            ereport(ERROR,
                    (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                     errmsg("permits with an explicit owner need a ttl")));
    }
    token = acquire(name, SVCBUS_LOCK_KIND_SEMAPHORE, SVCBUS_LOCK_PERMITS, permits, limit,
                    ttl_ms, wait_ms, owner);
    if (token == 0)
        PG_RETURN_NULL();
    if (ttl_ms > 0)
        svcbus_lock_wake_worker();
    if (!is_session_owner(owner))
        lease_store(name, owner, SVCBUS_LOCK_KIND_SEMAPHORE, SVCBUS_LOCK_PERMITS, permits, limit,
                    token, now_ms() + ttl_ms);
    PG_RETURN_INT64((int64) token);
}

/* release_permits(name, token, owner) -> true, or false when not held. */
PG_FUNCTION_INFO_V1(svcbus_release_permits);
Datum
svcbus_release_permits(PG_FUNCTION_ARGS)
{
    char       *name = text_arg(fcinfo, 0, "semaphore name");
    char        owner[SVCBUS_LOCK_OWNER_MAX];

    if (PG_ARGISNULL(1))
        ereport(ERROR,
                (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
                 errmsg("token must not be null")));
    prepare();
    if (PG_ARGISNULL(2))
        session_owner(owner);
    else
        strlcpy(owner, text_to_cstring(PG_GETARG_TEXT_PP(2)), sizeof(owner));
    {
        bool        ok = release(name, owner, (uint64) PG_GETARG_INT64(1));

        if (ok && !is_session_owner(owner))
            lease_forget(name, owner);
        PG_RETURN_BOOL(ok);
    }
}

/* ---------------------------------------------------------------------
 * Leader election: an exclusive lease on "election:<name>" owned by the
 * candidate; the term is its token.
 * ------------------------------------------------------------------- */

static void
election_lock_name(char *buf, const char *election)
{
    snprintf(buf, SVCBUS_LOCK_NAME_MAX, "election:%s", election);
}

/* campaign(election, candidate, ttl) -> term when leader (renewing), else NULL. */
PG_FUNCTION_INFO_V1(svcbus_campaign);
Datum
svcbus_campaign(PG_FUNCTION_ARGS)
{
    char       *election = text_arg(fcinfo, 0, "election name");
    char       *candidate = text_arg(fcinfo, 1, "candidate");
    int64       ttl_ms;
    char        lname[SVCBUS_LOCK_NAME_MAX];
    SvcbusLockResult res;
    SvcbusLockResult ex;
    SvcbusLockRc rc;
    uint64      term = 0;
    bool        fresh = false;
    int64       now = now_ms();

    if (PG_ARGISNULL(2))
        ereport(ERROR,
                (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
                 errmsg("ttl must not be null")));
    ttl_ms = ms_arg(fcinfo, 2, "ttl", 1, MAX_TTL_MS);
    if (strlen(election) + 10 > SVCBUS_LOCK_NAME_MAX || strlen(candidate) >= SVCBUS_LOCK_OWNER_MAX)
        ereport(ERROR,
                (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                 errmsg("election or candidate name is too long")));
    prepare();
    election_lock_name(lname, election);
    LWLockAcquire(svcbus_lock_lwlock(), LW_EXCLUSIVE);
    expire_locked(now, &ex);
    rc = svcbus_lock_acquire(svcbus_lock_table(), lname, SVCBUS_LOCK_KIND_LOCK, candidate,
                             SVCBUS_LOCK_EXCLUSIVE, 1, 0, ttl_ms, now, false, -1, &res);
    if (rc == SVCBUS_LOCK_OK)
    {
        term = res.token;
        fresh = res.holds == 1;
        if (!fresh)
        {
            /* Re-campaign by the leader: keep one hold, renew the lease. */
            SvcbusLockResult rel;

            svcbus_lock_release(svcbus_lock_table(), lname, candidate, term, now, &rel);
        }
    }
    LWLockRelease(svcbus_lock_lwlock());
    wake(&ex);
    if (rc != SVCBUS_LOCK_OK && rc != SVCBUS_LOCK_BUSY)
        raise_rc(rc, lname);
    if (term == 0)
        PG_RETURN_NULL();
    svcbus_lock_wake_worker();
    lease_store(lname, candidate, SVCBUS_LOCK_KIND_LOCK, SVCBUS_LOCK_EXCLUSIVE, 1, 0, term,
                now + ttl_ms);
    if (fresh)
    {
        char        payload[SVCBUS_LOCK_NAME_MAX + SVCBUS_LOCK_OWNER_MAX + 32];

        snprintf(payload, sizeof(payload), "elected %s %s %llu", election, candidate,
                 (unsigned long long) term);
        Async_Notify("svcbus_leader", payload);
    }
    PG_RETURN_INT64((int64) term);
}

/* resign(election, candidate, term) -> true when it was the leader. */
PG_FUNCTION_INFO_V1(svcbus_resign);
Datum
svcbus_resign(PG_FUNCTION_ARGS)
{
    char       *election = text_arg(fcinfo, 0, "election name");
    char       *candidate = text_arg(fcinfo, 1, "candidate");
    char        lname[SVCBUS_LOCK_NAME_MAX];
    bool        ok;

    if (PG_ARGISNULL(2))
        ereport(ERROR,
                (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
                 errmsg("term must not be null")));
    prepare();
    election_lock_name(lname, election);
    ok = release(lname, candidate, (uint64) PG_GETARG_INT64(2));
    if (ok)
        svcbus_lock_wake_worker();
    if (ok)
    {
        char        payload[SVCBUS_LOCK_NAME_MAX + SVCBUS_LOCK_OWNER_MAX + 32];

        lease_forget(lname, candidate);
        snprintf(payload, sizeof(payload), "resigned %s %s %lld", election, candidate,
                 (long long) PG_GETARG_INT64(2));
        Async_Notify("svcbus_leader", payload);
    }
    PG_RETURN_BOOL(ok);
}

/* leader(election) -> (candidate, term, expires_at), no row when none. */
PG_FUNCTION_INFO_V1(svcbus_leader);
Datum
svcbus_leader(PG_FUNCTION_ARGS)
{
    ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
    char       *election = text_arg(fcinfo, 0, "election name");
    char        lname[SVCBUS_LOCK_NAME_MAX];
    SvcbusLockTable *t;
    SvcbusLockResult res;
    Datum       values[3];
    bool        nulls[3] = {false};
    bool        found = false;

    prepare();
    InitMaterializedSRF(fcinfo, 0);
    election_lock_name(lname, election);
    t = svcbus_lock_table();
    LWLockAcquire(svcbus_lock_lwlock(), LW_EXCLUSIVE);
    expire_locked(now_ms(), &res);
    {
        const SvcbusLockEntry *e = svcbus_lock_entry(t, svcbus_lock_find(t, lname));

        if (e != NULL && e->holders >= 0)
        {
            const SvcbusLockReq *q = svcbus_lock_req(t, e->holders);
            char        owner[SVCBUS_LOCK_OWNER_MAX];

            strlcpy(owner, q->owner, sizeof(owner));
            values[1] = Int64GetDatum((int64) q->token);
            values[2] = TimestampTzGetDatum((TimestampTz) q->expires_at * 1000);
            nulls[2] = q->expires_at == 0;
            found = true;
            LWLockRelease(svcbus_lock_lwlock());
            values[0] = CStringGetTextDatum(owner);
        }
        else
            LWLockRelease(svcbus_lock_lwlock());
    }
    wake(&res);
    if (found)
        tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
    return (Datum) 0;
}

/* lock_key(name) -> the bigint key of its advisory lock. */
PG_FUNCTION_INFO_V1(svcbus_lock_key);
Datum
svcbus_lock_key(PG_FUNCTION_ARGS)
{
    char       *name = text_arg(fcinfo, 0, "lock name");

    PG_RETURN_INT64((int64) lock_key(name));
}

/* Rows of svcbus.locks: one per holder or waiter. */
PG_FUNCTION_INFO_V1(svcbus_lock_status);
Datum
svcbus_lock_status(PG_FUNCTION_ARGS)
{
    ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
    SvcbusLockTable *t;
    SvcbusLockTable *copy;
    Size        sz;

    svcbus_shmem_require();
    InitMaterializedSRF(fcinfo, 0);
    t = svcbus_lock_table();
    (void) svcbus_lock_tick(now_ms());
    /* Copy the arena under the lock, then build rows without it. */
    sz = svcbus_lock_table_size(t->max_locks, t->max_reqs);
    copy = palloc(sz);
    LWLockAcquire(svcbus_lock_lwlock(), LW_SHARED);
    memcpy(copy, t, sz);
    LWLockRelease(svcbus_lock_lwlock());

    for (int32 i = 0; i < copy->max_locks; i++)
    {
        const SvcbusLockEntry *e = svcbus_lock_entry(copy, i);
        int         nwait = 0;

        if (e == NULL)
            continue;
        for (int32 w = e->waiters; w >= 0; w = svcbus_lock_req(copy, w)->next)
            nwait++;
        for (int pass = 0; pass < 2; pass++)
            for (int32 r = pass == 0 ? e->holders : e->waiters; r >= 0;
                 r = svcbus_lock_req(copy, r)->next)
            {
                const SvcbusLockReq *q = svcbus_lock_req(copy, r);
                Datum       values[9];
                bool        nulls[9] = {false};

                values[0] = CStringGetTextDatum(e->name);
                values[1] = CStringGetTextDatum(e->kind == SVCBUS_LOCK_KIND_SEMAPHORE ? "semaphore" : "lock");
                values[2] = CStringGetTextDatum(q->mode == SVCBUS_LOCK_SHARED ? "shared" :
                                                q->mode == SVCBUS_LOCK_EXCLUSIVE ? "exclusive" : "permits");
                values[3] = CStringGetTextDatum(q->owner);
                values[4] = CStringGetTextDatum(q->granted ? "held" : "waiting");
                values[5] = Int64GetDatum((int64) q->token);
                nulls[5] = !q->granted;
                values[6] = Int32GetDatum(e->kind == SVCBUS_LOCK_KIND_SEMAPHORE ? q->permits : q->holds);
                values[7] = TimestampTzGetDatum((TimestampTz) q->expires_at * 1000);
                nulls[7] = q->expires_at == 0;
                values[8] = Int32GetDatum(nwait);
                tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
            }
    }
    return (Datum) 0;
}
