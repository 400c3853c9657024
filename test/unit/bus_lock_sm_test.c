/*
 * test/unit/bus_lock_sm_test.c
 *      The lock state machine: exclusive and shared locks, strict FIFO,
 *      re-entrancy, semaphores, leases, fencing tokens, cancellation,
 *      deadlock detection, session end, capacity.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "bus/lock_sm.h"

#define L SVCBUS_LOCK_KIND_LOCK
#define S SVCBUS_LOCK_KIND_SEMAPHORE
#define X SVCBUS_LOCK_EXCLUSIVE
#define SH SVCBUS_LOCK_SHARED

static SvcbusLockTable *
new_table(int locks, int reqs, uint32_t epoch)
{
    void       *arena = malloc(svcbus_lock_table_size(locks, reqs));

    return svcbus_lock_table_init(arena, locks, reqs, epoch);
}

/* One exclusive holder; others get BUSY or queue in order; release hands over. */
static void
exclusive_is_exclusive_and_fifo(void **state)
{
    SvcbusLockTable *t = new_table(8, 16, 1);
    SvcbusLockResult r, rb, rc;
    uint64_t    ta;

    (void) state;
    assert_int_equal(svcbus_lock_acquire(t, "job", L, "a", X, 1, 0, 0, 0, true, 1, &r), SVCBUS_LOCK_OK);
    ta = r.token;
    assert_int_equal(svcbus_lock_acquire(t, "job", L, "b", X, 1, 0, 0, 0, false, 2, &rb), SVCBUS_LOCK_BUSY);
    assert_int_equal(svcbus_lock_acquire(t, "job", L, "b", X, 1, 0, 0, 0, true, 2, &rb), SVCBUS_LOCK_QUEUED);
    assert_int_equal(svcbus_lock_acquire(t, "job", L, "c", X, 1, 0, 0, 0, true, 3, &rc), SVCBUS_LOCK_QUEUED);
    assert_int_equal(svcbus_lock_release(t, "job", "a", ta, 10, &r), SVCBUS_LOCK_OK);
    assert_int_equal(r.nwoken, 1);
    assert_int_equal(r.woken_waiter[0], 2);         /* b first: FIFO */
    assert_true(svcbus_lock_req(t, rb.req)->token > ta);
    assert_int_equal(svcbus_lock_release(t, "job", "b", svcbus_lock_req(t, rb.req)->token, 20, &r), SVCBUS_LOCK_OK);
    assert_int_equal(r.woken_waiter[0], 3);
    free(t);
}

/* Shared holders coexist; a shared request behind a waiting exclusive waits its turn. */
static void
shared_waits_behind_exclusive_waiter(void **state)
{
    SvcbusLockTable *t = new_table(8, 16, 1);
    SvcbusLockResult r1, r2, rx, r3, rel;

    (void) state;
    assert_int_equal(svcbus_lock_acquire(t, "doc", L, "r1", SH, 1, 0, 0, 0, true, 1, &r1), SVCBUS_LOCK_OK);
    assert_int_equal(svcbus_lock_acquire(t, "doc", L, "r2", SH, 1, 0, 0, 0, true, 2, &r2), SVCBUS_LOCK_OK);
    assert_int_equal(svcbus_lock_acquire(t, "doc", L, "w", X, 1, 0, 0, 0, true, 3, &rx), SVCBUS_LOCK_QUEUED);
    assert_int_equal(svcbus_lock_acquire(t, "doc", L, "r3", SH, 1, 0, 0, 0, true, 4, &r3), SVCBUS_LOCK_QUEUED);
    svcbus_lock_release(t, "doc", "r1", r1.token, 1, &rel);
    assert_int_equal(rel.nwoken, 0);                 /* r2 still reads */
    svcbus_lock_release(t, "doc", "r2", r2.token, 2, &rel);
    assert_int_equal(rel.nwoken, 1);
    assert_int_equal(rel.woken_waiter[0], 3);        /* the writer, not r3 */
    svcbus_lock_release(t, "doc", "w", svcbus_lock_req(t, rx.req)->token, 3, &rel);
    assert_int_equal(rel.woken_waiter[0], 4);
    free(t);
}

/* The same owner re-enters with the same token; the last release frees; upgrade refused. */
static void
reentrant_holds_and_no_upgrade(void **state)
{
    SvcbusLockTable *t = new_table(8, 16, 1);
    SvcbusLockResult r, r2, rel;

    (void) state;
    svcbus_lock_acquire(t, "k", L, "a", X, 1, 0, 0, 0, true, 1, &r);
    assert_int_equal(svcbus_lock_acquire(t, "k", L, "a", X, 1, 0, 0, 0, true, 1, &r2), SVCBUS_LOCK_OK);
    assert_true(r2.token == r.token);
    assert_int_equal(r2.holds, 2);
    svcbus_lock_release(t, "k", "a", r.token, 1, &rel);
    assert_int_equal(svcbus_lock_fence(t, "k", r.token), SVCBUS_LOCK_OK);
    svcbus_lock_release(t, "k", "a", r.token, 1, &rel);
    assert_int_equal(svcbus_lock_fence(t, "k", r.token), SVCBUS_LOCK_E_STALE);
    assert_int_equal(svcbus_lock_find(t, "k"), -1);  /* idle entries are freed */

    svcbus_lock_acquire(t, "k", L, "a", SH, 1, 0, 0, 0, true, 1, &r);
    assert_int_equal(svcbus_lock_acquire(t, "k", L, "a", X, 1, 0, 0, 0, true, 1, &r2), SVCBUS_LOCK_E_UPGRADE);
    free(t);
}

/* Releasing what you do not hold, or with a wrong token, changes nothing. */
static void
wrong_owner_or_token_is_refused(void **state)
{
    SvcbusLockTable *t = new_table(8, 16, 1);
    SvcbusLockResult r, rel;

    (void) state;
    svcbus_lock_acquire(t, "k", L, "a", X, 1, 0, 0, 0, true, 1, &r);
    assert_int_equal(svcbus_lock_release(t, "k", "b", r.token, 1, &rel), SVCBUS_LOCK_E_NOT_HELD);
    assert_int_equal(svcbus_lock_release(t, "k", "a", r.token + 1, 1, &rel), SVCBUS_LOCK_E_NOT_HELD);
    assert_int_equal(svcbus_lock_release(t, "nope", "a", r.token, 1, &rel), SVCBUS_LOCK_E_NOT_HELD);
    assert_int_equal(svcbus_lock_renew(t, "k", "b", r.token, 100, 1), SVCBUS_LOCK_E_NOT_HELD);
    assert_int_equal(svcbus_lock_fence(t, "k", r.token), SVCBUS_LOCK_OK);
    free(t);
}

/* Semaphores: permits up to the limit, FIFO, limit must match, over-limit refused. */
static void
semaphores_count_permits(void **state)
{
    SvcbusLockTable *t = new_table(8, 16, 1);
    SvcbusLockResult a, b, c, rel;

    (void) state;
    assert_int_equal(svcbus_lock_acquire(t, "pool", S, "a", 0, 2, 3, 0, 0, true, 1, &a), SVCBUS_LOCK_OK);
    assert_int_equal(svcbus_lock_acquire(t, "pool", S, "b", 0, 2, 3, 0, 0, true, 2, &b), SVCBUS_LOCK_QUEUED);
    assert_int_equal(svcbus_lock_acquire(t, "pool", S, "c", 0, 1, 3, 0, 0, true, 3, &c), SVCBUS_LOCK_QUEUED);  /* fits, but FIFO */
    assert_int_equal(svcbus_lock_acquire(t, "pool", S, "d", 0, 4, 3, 0, 0, true, 4, &c), SVCBUS_LOCK_E_LIMIT);
    assert_int_equal(svcbus_lock_acquire(t, "pool", S, "d", 0, 1, 5, 0, 0, true, 4, &c), SVCBUS_LOCK_E_LIMIT);
    assert_int_equal(svcbus_lock_acquire(t, "pool", L, "d", X, 1, 0, 0, 0, true, 4, &c), SVCBUS_LOCK_E_KIND);
    svcbus_lock_release(t, "pool", "a", a.token, 1, &rel);
    assert_int_equal(rel.nwoken, 2);                 /* b (2) and c (1) fit in 3 */
    assert_int_equal(svcbus_lock_entry(t, svcbus_lock_find(t, "pool"))->used, 3);
    free(t);
}

/* Leases end at their time; expiry hands the lock to the next waiter. */
static void
leases_expire_and_hand_over(void **state)
{
    SvcbusLockTable *t = new_table(8, 16, 1);
    SvcbusLockResult a, b, ex;

    (void) state;
    svcbus_lock_acquire(t, "lease", L, "a", X, 1, 0, 1000, 0, true, 1, &a);
    svcbus_lock_acquire(t, "lease", L, "b", X, 1, 0, 0, 0, true, 2, &b);
    assert_int_equal(svcbus_lock_next_expiry(t), 1000);
    assert_int_equal(svcbus_lock_expire(t, 999, &ex), 0);
    assert_int_equal(svcbus_lock_renew(t, "lease", "a", a.token, 500, 900), SVCBUS_LOCK_OK);
    assert_int_equal(svcbus_lock_expire(t, 1000, &ex), 0);
    assert_int_equal(svcbus_lock_expire(t, 1400, &ex), 1);
    assert_int_equal(ex.woken_waiter[0], 2);
    assert_int_equal(svcbus_lock_fence(t, "lease", a.token), SVCBUS_LOCK_E_STALE);
    assert_int_equal(svcbus_lock_fence(t, "lease", svcbus_lock_req(t, b.req)->token), SVCBUS_LOCK_OK);
    assert_int_equal(svcbus_lock_next_expiry(t), 0);  /* b holds without a lease */
    assert_int_equal(t->nleases, 0);
    free(t);
}

/* Tokens strictly increase per name across releases, expiries and epochs (restarts). */
static void
tokens_increase_across_epochs(void **state)
{
    SvcbusLockTable *t = new_table(8, 16, 7);
    SvcbusLockResult r, rel;
    uint64_t    last = 0;

    (void) state;
    for (int i = 0; i < 100; i++)
    {
        svcbus_lock_acquire(t, i % 2 ? "x" : "y", L, "a", X, 1, 0, 0, i, true, 1, &r);
        assert_true(r.token > last);
        last = r.token;
        svcbus_lock_release(t, i % 2 ? "x" : "y", "a", r.token, i, &rel);
    }
    free(t);
    t = new_table(8, 16, 8);    /* the server restarted: next epoch */
    svcbus_lock_acquire(t, "x", L, "a", X, 1, 0, 0, 0, true, 1, &r);
    assert_true(r.token > last);
    free(t);
}

/* A waiter that gives up lets compatible waiters behind it through. */
static void
cancel_unblocks_the_queue(void **state)
{
    SvcbusLockTable *t = new_table(8, 16, 1);
    SvcbusLockResult r1, rx, r2, can;

    (void) state;
    svcbus_lock_acquire(t, "d", L, "r1", SH, 1, 0, 0, 0, true, 1, &r1);
    svcbus_lock_acquire(t, "d", L, "w", X, 1, 0, 0, 0, true, 2, &rx);
    svcbus_lock_acquire(t, "d", L, "r2", SH, 1, 0, 0, 0, true, 3, &r2);
    assert_false(svcbus_lock_req(t, r2.req)->granted);
    svcbus_lock_cancel(t, rx.req, 5, &can);
    assert_int_equal(can.nwoken, 1);
    assert_int_equal(can.woken_waiter[0], 3);
    free(t);
}

/* A cycle of waiters is detected; a plain wait is not a deadlock. */
static void
deadlock_cycle_is_found(void **state)
{
    SvcbusLockTable *t = new_table(8, 16, 1);
    SvcbusLockResult a1, b2, aw, bw, c;

    (void) state;
    svcbus_lock_acquire(t, "l1", L, "A", X, 1, 0, 0, 0, true, 1, &a1);
    svcbus_lock_acquire(t, "l2", L, "B", X, 1, 0, 0, 0, true, 2, &b2);
    svcbus_lock_acquire(t, "l2", L, "A", X, 1, 0, 0, 0, true, 1, &aw);
    assert_false(svcbus_lock_in_deadlock(t, aw.req));
    svcbus_lock_acquire(t, "l3", L, "C", X, 1, 0, 0, 0, true, 3, &c);
    svcbus_lock_acquire(t, "l1", L, "B", X, 1, 0, 0, 0, true, 2, &bw);
    assert_true(svcbus_lock_in_deadlock(t, bw.req));
    assert_true(svcbus_lock_in_deadlock(t, aw.req));
    svcbus_lock_cancel(t, bw.req, 1, &c);
    assert_false(svcbus_lock_in_deadlock(t, aw.req));
    free(t);
}

/* A session's end releases its holds and withdraws its waits. */
static void
owner_end_releases_everything(void **state)
{
    SvcbusLockTable *t = new_table(8, 16, 1);
    SvcbusLockResult r, w, end;

    (void) state;
    svcbus_lock_acquire(t, "p", L, "s1", X, 1, 0, 0, 0, true, 1, &r);
    svcbus_lock_acquire(t, "q", L, "s2", X, 1, 0, 0, 0, true, 2, &r);
    svcbus_lock_acquire(t, "q", L, "s1", X, 1, 0, 0, 0, true, 1, &w);
    svcbus_lock_acquire(t, "p", L, "s3", X, 1, 0, 0, 0, true, 3, &w);
    assert_int_equal(svcbus_lock_release_owner(t, "s1", 9, &end), 2);
    assert_int_equal(end.nwoken, 1);
    assert_int_equal(end.woken_waiter[0], 3);
    free(t);
}

/* A full arena refuses cleanly and leaves nothing half-made. */
static void
full_arena_is_refused(void **state)
{
    SvcbusLockTable *t = new_table(2, 3, 1);
    SvcbusLockResult r;

    (void) state;
    assert_int_equal(svcbus_lock_acquire(t, "a", L, "o", X, 1, 0, 0, 0, true, 1, &r), SVCBUS_LOCK_OK);
    assert_int_equal(svcbus_lock_acquire(t, "b", L, "o", X, 1, 0, 0, 0, true, 1, &r), SVCBUS_LOCK_OK);
    assert_int_equal(svcbus_lock_acquire(t, "c", L, "o", X, 1, 0, 0, 0, true, 1, &r), SVCBUS_LOCK_E_FULL);
    assert_int_equal(svcbus_lock_acquire(t, "a", L, "p", X, 1, 0, 0, 0, true, 2, &r), SVCBUS_LOCK_QUEUED);
    assert_int_equal(svcbus_lock_acquire(t, "b", L, "q", X, 1, 0, 0, 0, true, 3, &r), SVCBUS_LOCK_E_FULL);
    assert_int_equal(t->nlocks, 2);
    assert_int_equal(t->nreqs, 3);
    free(t);
}

/* A lease restored after a restart keeps its token, excludes others and expires on time. */
static void
restored_lease_is_honoured(void **state)
{
    SvcbusLockTable *old = new_table(8, 16, 3);
    SvcbusLockTable *t;
    SvcbusLockResult r, b, ex;
    uint64_t    tok;

    (void) state;
    svcbus_lock_acquire(old, "lease", L, "client", X, 1, 0, 5000, 0, true, 1, &r);
    tok = r.token;
    free(old);
    t = new_table(8, 16, 4);    /* restart: new epoch, empty table */
    assert_int_equal(svcbus_lock_restore(t, "lease", L, "client", X, 1, 0, tok, 5000), SVCBUS_LOCK_OK);
    assert_int_equal(svcbus_lock_fence(t, "lease", tok), SVCBUS_LOCK_OK);
    assert_int_equal(svcbus_lock_acquire(t, "lease", L, "other", X, 1, 0, 0, 100, true, 2, &b), SVCBUS_LOCK_QUEUED);
    assert_int_equal(svcbus_lock_expire(t, 4999, &ex), 0);
    assert_int_equal(svcbus_lock_expire(t, 5000, &ex), 1);
    assert_int_equal(ex.woken_waiter[0], 2);
    assert_true(svcbus_lock_req(t, b.req)->token > tok);
    free(t);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(exclusive_is_exclusive_and_fifo),
        cmocka_unit_test(shared_waits_behind_exclusive_waiter),
        cmocka_unit_test(reentrant_holds_and_no_upgrade),
        cmocka_unit_test(wrong_owner_or_token_is_refused),
        cmocka_unit_test(semaphores_count_permits),
        cmocka_unit_test(leases_expire_and_hand_over),
        cmocka_unit_test(tokens_increase_across_epochs),
        cmocka_unit_test(cancel_unblocks_the_queue),
        cmocka_unit_test(deadlock_cycle_is_found),
        cmocka_unit_test(owner_end_releases_everything),
        cmocka_unit_test(full_arena_is_refused),
        cmocka_unit_test(restored_lease_is_honoured),
    };

    return cmocka_run_group_tests_name("bus_lock_sm", tests, NULL, NULL);
}
