/*
 * bus/projection.h
 *      Projections of the event log (bus/projection.c; design in
 *      bus/README-events.md, "Projections").
 */
#ifndef SVCBUS_PROJECTION_H
#define SVCBUS_PROJECTION_H

#include "postgres.h"

#include "nodes/pg_list.h"
#include "access/tupdesc.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"

#include "bus/event.h"

typedef struct SvcbusProjection
{
    char       *name;
    Oid         handler;        /* InvalidOid: forwards to topic */
    bool        per_batch;      /* handler(svcbus.event[]) */
    bool        is_inline;
    char      **types;          /* NULL: every type */
    int         ntypes;
    char       *topic;
    Oid         owner;
    bool        failed;
    char       *view_delta;     /* a view over events (bus/event_view.c) */
    char       *view_init;      /* its state's first row, if it has no GROUP BY */
    char       *view_state;     /* its state table, quoted */
} SvcbusProjection;

/* What create_view makes (bus/event_view.c) */
typedef struct SvcbusViewDef
{
    char       *delta;          /* merges the events of ($1, $2) into the state */
    char       *init;           /* NULL, or the state's first row */
    char       *state;          /* the state table, quoted */
    char       *rel;            /* the view, quoted */
    Oid         state_oid;
    Oid         rel_oid;
} SvcbusViewDef;

typedef struct SvcbusEventRow
{
    int64       position;
    char       *stream;
    int64       version;
    char       *type;
    Jsonb      *data;
    Jsonb      *metadata;
    TimestampTz appended_at;
} SvcbusEventRow;

extern int  svcbus_projection_batch;
extern int  svcbus_projection_timeout_ms;
extern int  svcbus_view_batch;

extern void svcbus_projection_inline(const char *stream, const SvcbusEventIn *evs, int n,
                                     const int64 *positions, int64 first_version, TimestampTz now);
extern bool svcbus_projection_any_inline(void);
extern int  svcbus_projection_step(const char *name);
extern List *svcbus_projection_runnable(void);
extern int64 svcbus_projection_rebuild(const char *name);
extern SvcbusEventRow *svcbus_event_rows_copy(int *n, MemoryContext cxt);
extern Datum svcbus_event_datum(TupleDesc td, const SvcbusEventRow *e);
extern Jsonb *svcbus_event_fold(const char *stream, Oid reducer, Jsonb *initial, int32 snapshot_every);
extern void svcbus_view_create(const char *name, const char *query, SvcbusViewDef *def);

#endif                          /* SVCBUS_PROJECTION_H */
