/*
 * test/unit/bus_backoff_test.c
 *      Unit tests of the back-off policy (bus/backoff.c), used for worker
 *      restarts and queue nacks.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "bus/backoff.h"

/* The first retry waits the minimum; each further one doubles it. */
static void
doubles_from_the_minimum(void **state)
{
    (void) state;
    assert_int_equal(svcbus_backoff_delay_ms(100, 10000, 0), 100);
    assert_int_equal(svcbus_backoff_delay_ms(100, 10000, 1), 200);
    assert_int_equal(svcbus_backoff_delay_ms(100, 10000, 2), 400);
    assert_int_equal(svcbus_backoff_delay_ms(100, 10000, 6), 6400);
}

/* The delay never passes the maximum, however many attempts. */
static void
caps_at_the_maximum(void **state)
{
    (void) state;
    assert_int_equal(svcbus_backoff_delay_ms(100, 10000, 7), 10000);
    assert_int_equal(svcbus_backoff_delay_ms(100, 10000, 1000), 10000);
    assert_int_equal(svcbus_backoff_delay_ms(1000, 60000, 2147483647), 60000);
}

/* Huge values do not overflow into negative delays. */
static void
never_overflows(void **state)
{
    (void) state;
    assert_int_equal(svcbus_backoff_delay_ms(INT64_MAX / 2, INT64_MAX, 5), INT64_MAX);
    assert_true(svcbus_backoff_delay_ms(3, INT64_MAX, 62) > 0);
}

/* Degenerate inputs: no minimum means no delay; max below min means min. */
static void
degenerate_inputs(void **state)
{
    (void) state;
    assert_int_equal(svcbus_backoff_delay_ms(0, 1000, 3), 0);
    assert_int_equal(svcbus_backoff_delay_ms(-5, 1000, 3), 0);
    assert_int_equal(svcbus_backoff_delay_ms(500, 100, 0), 500);
    assert_int_equal(svcbus_backoff_delay_ms(500, 100, 9), 500);
    assert_int_equal(svcbus_backoff_delay_ms(100, 1000, -4), 100);
}

/* Jitter spreads symmetrically within the given percentage. */
static void
jitter_stays_within_spread(void **state)
{
    (void) state;
    assert_int_equal(svcbus_backoff_jitter_ms(1000, 20, 0.0), 800);
    assert_int_equal(svcbus_backoff_jitter_ms(1000, 20, 0.5), 1000);
    assert_true(svcbus_backoff_jitter_ms(1000, 20, 0.9999) <= 1200);
    assert_true(svcbus_backoff_jitter_ms(1000, 20, 0.9999) > 1190);
    assert_int_equal(svcbus_backoff_jitter_ms(1000, 0, 0.3), 1000);
    assert_int_equal(svcbus_backoff_jitter_ms(1000, 500, 0.0), 0);
    assert_int_equal(svcbus_backoff_jitter_ms(-7, 20, 0.3), 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(doubles_from_the_minimum),
        cmocka_unit_test(caps_at_the_maximum),
        cmocka_unit_test(never_overflows),
        cmocka_unit_test(degenerate_inputs),
        cmocka_unit_test(jitter_stays_within_spread),
    };

    return cmocka_run_group_tests_name("bus_backoff", tests, NULL, NULL);
}
