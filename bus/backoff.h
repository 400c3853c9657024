/*
 * bus/backoff.h
 *      Exponential back-off policy, pure and deterministic.
 *
 * Used by the launcher to space out worker restarts and by the queue engine
 * for nack without an explicit delay.  No PostgreSQL dependency, so the C
 * unit tests exercise it directly.
 */
#ifndef SVCBUS_BACKOFF_H
#define SVCBUS_BACKOFF_H

#include <stdint.h>

/*
 * Delay in milliseconds before attempt number `attempt` (0 = first retry):
 * min_ms * 2^attempt, capped at max_ms.  Never negative, never overflows.
 * min_ms <= 0 gives 0; max_ms < min_ms is treated as max_ms == min_ms.
 */
int64_t svcbus_backoff_delay_ms(int64_t min_ms, int64_t max_ms, int attempt);

/*
 * Spread a delay by up to +/- spread_pct percent using the caller's random
 * value r in [0, 1).  Deterministic for a given r, so tests pin it.
 */
int64_t svcbus_backoff_jitter_ms(int64_t delay_ms, int spread_pct, double r);

#endif
