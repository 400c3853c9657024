/*
 * bus/backoff.c
 *      Exponential back-off policy (see backoff.h).
 *
 * Pure functions: no clock, no randomness of their own, no shared state.
 */
#include "bus/backoff.h"

int64_t
svcbus_backoff_delay_ms(int64_t min_ms, int64_t max_ms, int attempt)
{
    int64_t delay;

    if (min_ms <= 0)
        return 0;
    if (max_ms < min_ms)
        max_ms = min_ms;
    if (attempt < 0)
        attempt = 0;

    delay = min_ms;
    while (attempt-- > 0)
    {
        if (delay >= max_ms / 2)
            return max_ms;
        delay *= 2;
    }
    return delay < max_ms ? delay : max_ms;
}

int64_t
svcbus_backoff_jitter_ms(int64_t delay_ms, int spread_pct, double r)
{
    double  span;
    int64_t out;

    if (delay_ms <= 0 || spread_pct <= 0)
        return delay_ms < 0 ? 0 : delay_ms;
    if (spread_pct > 100)
        spread_pct = 100;
    if (r < 0.0)
        r = 0.0;
    if (r >= 1.0)
        r = 0.999999;
    span = (double) delay_ms * spread_pct / 100.0;
    out = delay_ms + (int64_t) ((2.0 * r - 1.0) * span);
    return out < 0 ? 0 : out;
}
