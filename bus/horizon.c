/*
 * bus/horizon.c
 *      The read horizon (bus/horizon.h): pure, the caller serialises.
 */
#include <stddef.h>

#include "bus/horizon.h"

void
svcbus_horizon_init(SvcbusHorizon *h, SvcbusHorizonSlot *slots, int nslots,
                    int64_t floor)
{
    h->floor = floor;
    h->overflow_min = 0;
    h->overflow = 0;
    h->nslots = nslots;
    h->slots = slots;
    for (int i = 0; i < nslots; i++)
    {
        slots[i].procno = -1;
        slots[i].min_key = 0;
    }
}

int
svcbus_horizon_hold(SvcbusHorizon *h, int32_t procno, int64_t *key)
{
    int         first;

    if (*key < h->floor)
        *key = h->floor;
    if (h->nslots > 0)
    {
        first = (int) ((uint32_t) procno % (uint32_t) h->nslots);
        for (int n = 0; n < h->nslots; n++)
        {
            int         i = (first + n) % h->nslots;

            if (h->slots[i].procno < 0)
            {
                h->slots[i].procno = procno;
                h->slots[i].min_key = *key;
                return i;
            }
        }
    }
    if (h->overflow == 0 || *key < h->overflow_min)
        h->overflow_min = *key;
    h->overflow++;
    return -1;
}

void
svcbus_horizon_add(SvcbusHorizon *h, int slot, int64_t *key)
{
    if (*key < h->floor)
        *key = h->floor;
    if (slot >= 0)
    {
        if (*key < h->slots[slot].min_key)
            h->slots[slot].min_key = *key;
    }
    else if (*key < h->overflow_min)
        h->overflow_min = *key;
}

void
svcbus_horizon_release(SvcbusHorizon *h, int slot, int32_t procno)
{
    if (slot >= 0)
    {
        if (slot < h->nslots && h->slots[slot].procno == procno)
            h->slots[slot].procno = -1;
    }
    else if (h->overflow > 0)
        h->overflow--;
}

int64_t
svcbus_horizon_peek(const SvcbusHorizon *h, int64_t upper)
{
    int64_t     v = upper;

    for (int i = 0; i < h->nslots; i++)
        if (h->slots[i].procno >= 0 && h->slots[i].min_key < v)
            v = h->slots[i].min_key;
    if (h->overflow > 0 && h->overflow_min < v)
        v = h->overflow_min;
    if (v < h->floor)
        v = h->floor;
    return v;
}

int64_t
svcbus_horizon_advance(SvcbusHorizon *h, int64_t upper)
{
    h->floor = svcbus_horizon_peek(h, upper);
    return h->floor;
}

int
svcbus_horizon_holds(const SvcbusHorizon *h)
{
    int         n = h->overflow;

    for (int i = 0; i < h->nslots; i++)
        if (h->slots[i].procno >= 0)
            n++;
    return n;
}
