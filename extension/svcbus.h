/*
 * extension/svcbus.h
 *      Declarations shared by the PostgreSQL glue, the engines and the
 *      background workers: version, GUC variables, shared-memory layout.
 *
 * Locking: SvcbusShared->workers[i] is protected by its own spinlock
 * `mutex`; only a few fields are copied under it, never anything that can
 * ERROR.  Slot names and the table's size are fixed when shared memory is
 * created and never change afterwards.
 */
#ifndef SVCBUS_H
#define SVCBUS_H

#include "postgres.h"

#include "datatype/timestamp.h"
#include "fmgr.h"
#include "port/atomics.h"
#include "storage/lwlock.h"
#include "storage/spin.h"

#define SVCBUS_VERSION "0.1"

/* Worker table: slot 0 is the launcher, then one slot per child worker. */
#define SVCBUS_MAX_WORKERS      16
#define SVCBUS_WORKER_NAME_LEN  64
#define SVCBUS_ERRMSG_LEN       256
#define SVCBUS_LAUNCHER_SLOT    0

typedef enum SvcbusWorkerState
{
    SVCBUS_WORKER_UNUSED = 0,   /* slot has no worker definition */
    SVCBUS_WORKER_STOPPED,      /* not running, not scheduled (disabled) */
    SVCBUS_WORKER_STARTING,     /* registered, process not yet reporting */
    SVCBUS_WORKER_RUNNING,      /* process up and working */
    SVCBUS_WORKER_BACKOFF       /* exited; restart scheduled at next_start_at */
} SvcbusWorkerState;

typedef struct SvcbusWorkerSlot
{
    slock_t     mutex;                  /* protects every field below */
    char        name[SVCBUS_WORKER_NAME_LEN];   /* fixed at shmem init */
    int         pid;                    /* 0 when not running */
    SvcbusWorkerState state;
    TimestampTz started_at;             /* current/last process start */
    TimestampTz last_exit_at;           /* 0 if never exited */
    TimestampTz next_start_at;          /* for BACKOFF */
    TimestampTz last_activity_at;       /* last pass of its main loop */
    int         restarts;               /* times restarted since server start */
    int         consecutive_failures;   /* for back-off; reset once stable */
    char        detail[SVCBUS_ERRMSG_LEN];      /* what it is doing */
    char        last_error[SVCBUS_ERRMSG_LEN];  /* last ERROR/FATAL seen */
} SvcbusWorkerSlot;

typedef struct SvcbusShared
{
    LWLock     *lock;                   /* general-purpose lock of the bus */
    int         crash_restarts;         /* shmem re-inits after crashes; set at init */
    int         nworkers;               /* slots in use; fixed at init */
    pg_atomic_uint64 catalog_generation;    /* bumped when queue definitions change */
    SvcbusWorkerSlot workers[SVCBUS_MAX_WORKERS];
} SvcbusShared;

/* extension/shmem.c */
extern SvcbusShared *svcbus_shared;
extern void svcbus_shmem_install_hooks(void);
extern SvcbusShared *svcbus_shmem_require(void);

/* extension/svcbus.c: argument helpers of the SQL functions */
extern char *svcbus_text_arg(FunctionCallInfo fcinfo, int n, const char *what);

/* extension/guc.c */
extern char *svcbus_database;
extern int  svcbus_restart_backoff_min_ms;
extern int  svcbus_restart_backoff_max_ms;
extern int  svcbus_worker_stable_ms;
extern int  svcbus_maintenance_naptime_ms;
extern void svcbus_guc_define(void);

/* bgworkers/registry.c: the child workers the launcher supervises */
typedef struct SvcbusWorkerDef
{
    const char *name;           /* shown in svcbus.workers */
    const char *function;       /* bgw_function_name in svcbus.so */
    bool        needs_database; /* connects to svcbus.database */
} SvcbusWorkerDef;

extern const SvcbusWorkerDef svcbus_worker_defs[];
extern const int svcbus_worker_ndefs;

/* bgworkers/launcher.c */
extern void svcbus_launcher_register(void);

/* bgworkers/worker.c: helpers every svcbus worker uses */
extern void svcbus_worker_attach(int slot, const char *detail);
extern void svcbus_worker_set_detail(const char *detail);
extern void svcbus_worker_heartbeat(void);
extern void svcbus_worker_wait(long timeout_ms);

#endif                          /* SVCBUS_H */
