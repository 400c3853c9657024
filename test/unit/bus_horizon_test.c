/*
 * test/unit/bus_horizon_test.c
 *      Unit tests of the read horizon (bus/horizon.c), shared by the queue
 *      engine (keys: visible_at) and the event log (keys: positions).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "bus/horizon.h"

/* With nothing held the horizon is the upper bound, and the floor follows. */
static void
nothing_held_reaches_upper(void **state)
{
    SvcbusHorizonSlot s[4];
    SvcbusHorizon h;

    (void) state;
    svcbus_horizon_init(&h, s, 4, 10);
    assert_int_equal(svcbus_horizon_holds(&h), 0);
    assert_int_equal(svcbus_horizon_advance(&h, 50), 50);
    assert_int_equal(h.floor, 50);
    /* an upper bound below the floor never moves the horizon back */
    assert_int_equal(svcbus_horizon_advance(&h, 20), 50);
}

/*
 * A writer holding key 12 keeps every reader below 12 whatever commits
 * above it; once it ends (commit or abort) the horizon passes it.
 */
static void
a_hold_stops_readers_until_released(void **state)
{
    SvcbusHorizonSlot s[4];
    SvcbusHorizon h;
    int64_t     k1 = 12, k2 = 15;
    int         a, b;

    (void) state;
    svcbus_horizon_init(&h, s, 4, 10);
    a = svcbus_horizon_hold(&h, 7, &k1);
    b = svcbus_horizon_hold(&h, 8, &k2);
    assert_true(a >= 0 && b >= 0 && a != b);
    svcbus_horizon_release(&h, b, 8);       /* the later writer commits first */
    assert_int_equal(svcbus_horizon_advance(&h, 20), 12);
    svcbus_horizon_release(&h, a, 7);
    assert_int_equal(svcbus_horizon_advance(&h, 20), 20);
}

/* A key below the floor is raised to it: no writer lands behind a reader. */
static void
keys_are_raised_to_the_floor(void **state)
{
    SvcbusHorizonSlot s[2];
    SvcbusHorizon h;
    int64_t     k = 5, k2 = 3;
    int         a;

    (void) state;
    svcbus_horizon_init(&h, s, 2, 0);
    assert_int_equal(svcbus_horizon_advance(&h, 30), 30);
    a = svcbus_horizon_hold(&h, 1, &k);
    assert_int_equal(k, 30);
    svcbus_horizon_add(&h, a, &k2);
    assert_int_equal(k2, 30);
    assert_int_equal(svcbus_horizon_advance(&h, 40), 30);
}

/* A later, smaller key of the same transaction lowers its hold. */
static void
add_lowers_the_hold(void **state)
{
    SvcbusHorizonSlot s[2];
    SvcbusHorizon h;
    int64_t     k = 25, k2 = 21, k3 = 28;
    int         a;

    (void) state;
    svcbus_horizon_init(&h, s, 2, 20);
    a = svcbus_horizon_hold(&h, 3, &k);
    svcbus_horizon_add(&h, a, &k2);
    svcbus_horizon_add(&h, a, &k3);
    assert_int_equal(svcbus_horizon_peek(&h, 99), 21);
    assert_int_equal(h.floor, 20);          /* peek does not move it */
}

/*
 * More writers than slots: the extra ones share the overflow bucket, which
 * holds the horizon at their smallest key until every one has ended (exact:
 * counted, never timed out).
 */
static void
overflow_holds_until_all_overflowed_end(void **state)
{
    SvcbusHorizonSlot s[1];
    SvcbusHorizon h;
    int64_t     k1 = 10, k2 = 11, k3 = 12;
    int         a, b, c;

    (void) state;
    svcbus_horizon_init(&h, s, 1, 0);
    a = svcbus_horizon_hold(&h, 1, &k1);
    b = svcbus_horizon_hold(&h, 2, &k2);
    c = svcbus_horizon_hold(&h, 3, &k3);
    assert_int_equal(a, 0);
    assert_int_equal(b, -1);
    assert_int_equal(c, -1);
    assert_int_equal(svcbus_horizon_holds(&h), 3);
    svcbus_horizon_release(&h, a, 1);
    assert_int_equal(svcbus_horizon_advance(&h, 50), 11);
    svcbus_horizon_release(&h, c, 3);
    assert_int_equal(svcbus_horizon_advance(&h, 50), 11);  /* b still open */
    svcbus_horizon_release(&h, b, 2);
    assert_int_equal(svcbus_horizon_advance(&h, 50), 50);
    assert_int_equal(svcbus_horizon_holds(&h), 0);
}

/* Releasing a slot another backend took since does not free it. */
static void
release_checks_the_owner(void **state)
{
    SvcbusHorizonSlot s[2];
    SvcbusHorizon h;
    int64_t     k = 4;
    int         a;

    (void) state;
    svcbus_horizon_init(&h, s, 2, 0);
    a = svcbus_horizon_hold(&h, 9, &k);
    svcbus_horizon_release(&h, a, 10);
    assert_int_equal(svcbus_horizon_peek(&h, 50), 4);
    svcbus_horizon_release(&h, a, 9);
    assert_int_equal(svcbus_horizon_peek(&h, 50), 50);
}

/* With as many slots as processes, each process gets its own slot. */
static void
procno_maps_to_its_own_slot(void **state)
{
    SvcbusHorizonSlot s[8];
    SvcbusHorizon h;

    (void) state;
    svcbus_horizon_init(&h, s, 8, 0);
    for (int p = 0; p < 8; p++)
    {
        int64_t     k = 100 + p;

        assert_int_equal(svcbus_horizon_hold(&h, p, &k), p);
    }
    assert_int_equal(svcbus_horizon_peek(&h, 1000), 100);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(nothing_held_reaches_upper),
        cmocka_unit_test(a_hold_stops_readers_until_released),
        cmocka_unit_test(keys_are_raised_to_the_floor),
        cmocka_unit_test(add_lowers_the_hold),
        cmocka_unit_test(overflow_holds_until_all_overflowed_end),
        cmocka_unit_test(release_checks_the_owner),
        cmocka_unit_test(procno_maps_to_its_own_slot),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
