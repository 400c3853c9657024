/*
 * bus/event.h
 *      The event store (CQRS): an insert-only log of events in streams,
 *      with a global position that readers take in commit-safe order.
 *
 * Positions come from one counter in shared memory, taken under the event
 * lock together with a hold on the read horizon (bus/horizon.h); the hold
 * is released when the appending transaction ends (bus/event_shmem.c).
 * read_all returns only positions below the horizon, read with a snapshot
 * taken after computing it: it never shows position N+1 while N may still
 * commit, and never waits for a position whose transaction aborted (that
 * position is a gap, skipped).  Design: bus/README-events.md.
 */
#ifndef SVCBUS_EVENT_H
#define SVCBUS_EVENT_H

#include "postgres.h"

#include "datatype/timestamp.h"

#include "port/atomics.h"
#include "storage/condition_variable.h"
#include "storage/lwlock.h"
#include "access/tupdesc.h"
#include "utils/array.h"
#include "utils/jsonb.h"
#include "utils/tuplestore.h"

#include "bus/horizon.h"

#define SVCBUS_STREAM_NAME_MAX   200    /* bytes */
#define SVCBUS_EVENT_TYPE_MAX    200    /* bytes */
#define SVCBUS_EVENT_MAX_BATCH   10000  /* events per append */
#define SVCBUS_EVENT_MAX_BYTES   (1024 * 1024)  /* data + metadata of one event */

/* rights on streams, by name prefix */
#define SVCBUS_SPRIV_APPEND  1
#define SVCBUS_SPRIV_READ    2
#define SVCBUS_SPRIV_ADMIN   4
#define SVCBUS_SPRIV_ALL     7

typedef struct SvcbusEventShared
{
    LWLock     *lock;           /* protects everything below */
    bool        loaded;         /* next_position read from the table */
    int64       next_position;  /* first position not yet handed out */
    int64       appended_total; /* events committed since startup */
    ConditionVariable cv;       /* read_all waiters; broadcast at each end */
    pg_atomic_uint32 projector_procno;  /* pgprocno + 1 of the projector, 0: none */
    pg_atomic_uint32 meta_used; /* 1 once some stream was truncated, deleted or
                                 * limited (or stream_meta had rows at load):
                                 * versions must consult stream_meta */
    SvcbusHorizon horizon;      /* over positions */
    SvcbusHorizonSlot slots[FLEXIBLE_ARRAY_MEMBER];
} SvcbusEventShared;

/* expected_version of an append */
typedef enum SvcbusExpect
{
    SVCBUS_EXPECT_ANY,
    SVCBUS_EXPECT_NO_STREAM,
    SVCBUS_EXPECT_VERSION
} SvcbusExpect;

typedef struct SvcbusEventIn
{
    const char *type;
    Jsonb      *data;
    Jsonb      *metadata;
} SvcbusEventIn;

/* bus/event_shmem.c */
extern void svcbus_event_shmem_request(void);
extern void svcbus_event_shmem_init(void);
extern SvcbusEventShared *svcbus_event_shared(void);
extern void svcbus_event_reserve(int64 n, int64 *first);
extern int64 svcbus_event_horizon(void);
extern int64 svcbus_event_read_horizon(void);
extern bool svcbus_event_loaded(void);
extern void svcbus_event_set_loaded(int64 max_position);
extern void svcbus_event_register_projector(int procno);
extern void svcbus_event_wake_projector(void);

/* bus/event_store.c */
extern void svcbus_event_validate_stream(const char *stream);
extern void svcbus_event_require(const char *name, int right, bool is_prefix);
extern int  svcbus_event_rights(Oid user, const char *name);
extern int64 svcbus_event_append(const char *stream, SvcbusEventIn *evs, int n,
                                 SvcbusExpect expect, int64 expected, int64 *positions);
extern int64 svcbus_event_stream_version(const char *stream);
extern void svcbus_event_read_stream(const char *stream, int64 from_version, int32 max,
                                     Tuplestorestate *ts, TupleDesc td);
extern int64 svcbus_event_read_all(int64 from_position, int32 max, ArrayType *types,
                                   const char *prefix, Tuplestorestate *ts, TupleDesc td);
extern char *svcbus_event_cut(const char *s);
extern bool svcbus_event_stream_deleted(const char *stream);
extern int64 svcbus_event_truncate(const char *stream, int64 before, bool delete);
extern void svcbus_event_set_limits(const char *stream, int64 max_count, Interval *max_age);
extern int64 svcbus_event_scavenge(int limit);
extern void svcbus_event_grant(const char *prefix, const char *role,
                               const char *privilege, bool grant);

#endif                          /* SVCBUS_EVENT_H */
