/*
 * bus/projection.h
 *      Projections of the event log (bus/projection.c; design in
 *      bus/README-events.md, "Projections").
 */
#ifndef SVCBUS_PROJECTION_H
#define SVCBUS_PROJECTION_H

#include "postgres.h"

#include "nodes/pg_list.h"
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
} SvcbusProjection;

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

extern void svcbus_projection_inline(const char *stream, const SvcbusEventIn *evs, int n,
                                     const int64 *positions, int64 first_version, TimestampTz now);
extern bool svcbus_projection_any_inline(void);
extern int  svcbus_projection_step(const char *name);
extern List *svcbus_projection_runnable(void);
extern int64 svcbus_projection_rebuild(const char *name);

#endif                          /* SVCBUS_PROJECTION_H */
