/*
 * bus/locks.h
 *      PostgreSQL side of the lock service: shared memory (lock_shmem.c)
 *      and the SQL-level operations (extension/lock_api.c).  The state
 *      machine itself is bus/lock_sm.h.
 */
#ifndef SVCBUS_LOCKS_H
#define SVCBUS_LOCKS_H

#include "postgres.h"

#include "storage/lwlock.h"

#include "bus/lock_sm.h"

/* Errors clients may branch on (class SB, 1xx: locks). */
#define ERRCODE_SVCBUS_STALE_TOKEN    MAKE_SQLSTATE('S','B','1','0','1')
#define ERRCODE_SVCBUS_NOT_HELD       MAKE_SQLSTATE('S','B','1','0','2')
#define ERRCODE_SVCBUS_LOCK_CAPACITY  MAKE_SQLSTATE('S','B','1','0','3')

extern int  svcbus_max_locks;

extern Size svcbus_lock_shmem_size(void);
extern void svcbus_lock_shmem_request(void);
extern void svcbus_lock_shmem_init(void);
extern SvcbusLockTable *svcbus_lock_table(void);
extern LWLock *svcbus_lock_lwlock(void);
extern void svcbus_lock_worker_register(int procno);
extern void svcbus_lock_wake_worker(void);
extern void svcbus_lock_wake(const SvcbusLockResult *res);
extern int64 svcbus_lock_tick(int64 now_ms);
extern bool svcbus_lock_leases_loaded(void);
extern uint64 svcbus_lock_key_of(const char *name);
extern void svcbus_lock_set_leases_loaded(void);

#endif
