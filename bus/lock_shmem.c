/*
 * bus/lock_shmem.c
 *      Shared memory of the lock service: the lock state machine's arena
 *      (bus/lock_sm.c) under one LWLock, and the durable epoch that makes
 *      fencing tokens grow across restarts.
 *
 * Locking: every command on the arena runs with svcbus_lock_lwlock()
 * held exclusively (readers such as the svcbus.locks view hold it shared).
 * Commands are short, allocation-free and cannot raise errors.
 *
 * Epoch: the postmaster reads $PGDATA/svcbus/lock_epoch, adds one and
 * writes it back durably (write, fsync, rename, fsync) every time it
 * creates shared memory, at start and after each crash restart.  Tokens
 * carry the epoch in their high bits, so they never repeat or go back even
 * though the per-grant counter lives only in memory.
 */
#include "postgres.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "miscadmin.h"
#include "storage/fd.h"
#include "storage/lwlock.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "storage/shmem.h"

#include "bus/lock_sm.h"
#include "bus/locks.h"

int         svcbus_max_locks = 4096;

static SvcbusLockTable *lock_table = NULL;
static LWLock *lock_lwlock = NULL;
typedef struct LockShared
{
    pg_atomic_uint32 worker_procno;     /* lock worker's PGPROC number + 1 */
    pg_atomic_uint32 leases_loaded;     /* stored leases put back since startup */
} LockShared;

static LockShared *lock_shared = NULL;

#define EPOCH_DIR  "svcbus"
#define EPOCH_FILE "svcbus/lock_epoch"
#define EPOCH_TMP  "svcbus/lock_epoch.tmp"

static int
max_reqs(void)
{
    return Min(svcbus_max_locks * 2, SVCBUS_LOCK_MAX_REQS);
}

Size
svcbus_lock_shmem_size(void)
{
    return MAXALIGN(svcbus_lock_table_size(svcbus_max_locks, max_reqs()));
}

void
svcbus_lock_shmem_request(void)
{
    RequestAddinShmemSpace(svcbus_lock_shmem_size());
    RequestAddinShmemSpace(MAXALIGN(sizeof(LockShared)));
    RequestNamedLWLockTranche("svcbus locks", 1);
}

/* Postmaster: the next epoch, made durable before any token uses it. */
static uint32
next_epoch(void)
{
    uint32      epoch = 0;
    FILE       *f;
    int         fd;
    char        buf[32];

    f = AllocateFile(EPOCH_FILE, "r");
    if (f != NULL)
    {
        if (fgets(buf, sizeof(buf), f) != NULL)
            epoch = (uint32) strtoul(buf, NULL, 10);
        FreeFile(f);
    }
    epoch++;
    if (epoch >= (1u << 23))
        epoch = 1;              /* ~8 million restarts: wraps, documented */

    if (mkdir(EPOCH_DIR, S_IRWXU) != 0 && errno != EEXIST)
        ereport(FATAL,
                (errcode_for_file_access(),
                 errmsg("could not create directory \"%s\": %m", EPOCH_DIR)));
    fd = OpenTransientFile(EPOCH_TMP, O_WRONLY | O_CREAT | O_TRUNC | PG_BINARY);
    if (fd < 0)
        ereport(FATAL,
                (errcode_for_file_access(),
                 errmsg("could not create file \"%s\": %m", EPOCH_TMP)));
    snprintf(buf, sizeof(buf), "%u\n", epoch);
    if (write(fd, buf, strlen(buf)) != (ssize_t) strlen(buf) || pg_fsync(fd) != 0)
        ereport(FATAL,
                (errcode_for_file_access(),
                 errmsg("could not write file \"%s\": %m", EPOCH_TMP)));
    CloseTransientFile(fd);
    if (durable_rename(EPOCH_TMP, EPOCH_FILE, LOG) != 0)
        ereport(FATAL,
                (errcode_for_file_access(),
                 errmsg("could not write the svcbus lock epoch to \"%s\"", EPOCH_FILE)));
    return epoch;
}

/* Called from the shmem_startup_hook, holding AddinShmemInitLock. */
void
svcbus_lock_shmem_init(void)
{
    bool        found;
    void       *arena;

    arena = ShmemInitStruct("svcbus locks", svcbus_lock_shmem_size(), &found);
    if (!found)
        lock_table = svcbus_lock_table_init(arena, svcbus_max_locks, max_reqs(),
                                            IsUnderPostmaster ? 1 : next_epoch());
    else
        lock_table = arena;
    lock_lwlock = &(GetNamedLWLockTranche("svcbus locks"))->lock;
    lock_shared = ShmemInitStruct("svcbus lock shared", sizeof(LockShared), &found);
    if (!found)
    {
        pg_atomic_init_u32(&lock_shared->worker_procno, 0);
        pg_atomic_init_u32(&lock_shared->leases_loaded, 0);
    }
}

bool
svcbus_lock_leases_loaded(void)
{
    return pg_atomic_read_u32(&lock_shared->leases_loaded) != 0;
}

void
svcbus_lock_set_leases_loaded(void)
{
    pg_atomic_write_u32(&lock_shared->leases_loaded, 1);
}

/* The lock worker announces itself (procno) so lease changes can wake it. */
void
svcbus_lock_worker_register(int procno)
{
    pg_atomic_write_u32(&lock_shared->worker_procno, (uint32) procno + 1);
}

/* Wake the lock worker: a lease was granted or renewed. */
void
svcbus_lock_wake_worker(void)
{
    uint32      p;

    if (lock_shared == NULL)
        return;
    p = pg_atomic_read_u32(&lock_shared->worker_procno);
    if (p > 0 && p - 1 < ProcGlobal->allProcCount)
        SetLatch(&ProcGlobal->allProcs[p - 1].procLatch);
}

/*
 * Release every lease that has ended and wake the waiters it granted.
 * Returns the next lease end (ms since the epoch of TimestampTz / 1000), 0: none.
 */
int64
svcbus_lock_tick(int64 now_ms)
{
    SvcbusLockResult res;
    int64       next;

    LWLockAcquire(lock_lwlock, LW_EXCLUSIVE);
    svcbus_lock_expire(lock_table, now_ms, &res);
    next = svcbus_lock_next_expiry(lock_table);
    LWLockRelease(lock_lwlock);
    svcbus_lock_wake(&res);
    return next;
}

/* Set the latches of the waiters a command granted. */
void
svcbus_lock_wake(const SvcbusLockResult *res)
{
    if (res->woken_overflow)
    {
        for (int i = 0; i < (int) ProcGlobal->allProcCount; i++)
            SetLatch(&ProcGlobal->allProcs[i].procLatch);
        return;
    }
    for (int i = 0; i < res->nwoken; i++)
    {
        int         procno = res->woken_waiter[i];

        if (procno >= 0 && procno < (int) ProcGlobal->allProcCount)
            SetLatch(&ProcGlobal->allProcs[procno].procLatch);
    }
}

SvcbusLockTable *
svcbus_lock_table(void)
{
    return lock_table;
}

LWLock *
svcbus_lock_lwlock(void)
{
    return lock_lwlock;
}

/*
 * 64-bit key of a lock name for its PostgreSQL advisory lock (FNV-1a), as
 * pg_advisory_lock(bigint) takes it: svcbus.lock_key(name).
 */
uint64
svcbus_lock_key_of(const char *name)
{
    uint64      h = UINT64CONST(14695981039346656037);

    for (const unsigned char *p = (const unsigned char *) name; *p; p++)
    {
        h ^= *p;
        h *= UINT64CONST(1099511628211);
    }
    return h;
}
