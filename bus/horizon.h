/*
 * bus/horizon.h
 *      The read horizon: which keys of an ordered log a reader may take,
 *      so that it never passes a key whose transaction may still commit and
 *      never waits for one whose transaction aborted.
 *
 * Writers take their key (a timestamp for a queue, a position for the
 * event log) at or above the floor and hold the horizon at their smallest
 * key until their transaction ends; the commit and abort callbacks release
 * the hold, after the commit is visible to others.  A reader computes
 *     H = max(floor, min(upper, every held key))
 * with `upper` the next key a writer could take (now, or the next
 * position), reads only keys strictly below H with a snapshot taken after
 * computing it, and raises the floor to H: no writer gets a key below it
 * afterwards.  Every key below H is committed and visible to that snapshot,
 * or belongs to a transaction that aborted.  Tracking is exact: a hold is
 * released by the transaction's end, never by a timeout; when every slot is
 * taken the extra writers are counted in one overflow bucket, which holds
 * the horizon at their smallest key until all of them have ended.
 *
 * Pure C (no PostgreSQL calls, no clock): callers serialise every call with
 * their own lock.  Used by bus/queue_*.c and bus/event_*.c; unit tests in
 * test/unit/bus_horizon_test.c.
 */
#ifndef SVCBUS_HORIZON_H
#define SVCBUS_HORIZON_H

#include <stdbool.h>
#include <stdint.h>

typedef struct SvcbusHorizonSlot
{
    int32_t     procno;         /* -1: free */
    int64_t     min_key;        /* smallest key its transaction took */
} SvcbusHorizonSlot;

typedef struct SvcbusHorizon
{
    int64_t     floor;          /* no new hold gets a key below it */
    int64_t     overflow_min;   /* smallest key of the overflowed holds */
    int32_t     overflow;       /* holds that found no free slot */
    int32_t     nslots;
    SvcbusHorizonSlot *slots;   /* nslots, in the same shared area */
} SvcbusHorizon;

/* Set up h over slots[nslots], nothing held, floor at `floor`. */
extern void svcbus_horizon_init(SvcbusHorizon *h, SvcbusHorizonSlot *slots,
                                int nslots, int64_t floor);

/*
 * Take a first hold for procno at *key, raised to the floor first (the
 * raised key is returned in *key).  Returns the slot (try procno % nslots
 * first, then any free one) or -1 when it went to the overflow bucket.
 */
extern int  svcbus_horizon_hold(SvcbusHorizon *h, int32_t procno, int64_t *key);

/*
 * A later key of the same transaction (slot from svcbus_horizon_hold):
 * raised to the floor; lowers the hold when smaller than its key.
 */
extern void svcbus_horizon_add(SvcbusHorizon *h, int slot, int64_t *key);

/* The transaction ended: release its hold (slot -1: the overflow bucket). */
extern void svcbus_horizon_release(SvcbusHorizon *h, int slot, int32_t procno);

/* H = max(floor, min(upper, every hold)); raises the floor to H. */
extern int64_t svcbus_horizon_advance(SvcbusHorizon *h, int64_t upper);

/* H without raising the floor (views, tests). */
extern int64_t svcbus_horizon_peek(const SvcbusHorizon *h, int64_t upper);

/* Number of holds (slots and overflow). */
extern int  svcbus_horizon_holds(const SvcbusHorizon *h);

#endif                          /* SVCBUS_HORIZON_H */
