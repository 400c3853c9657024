/*
 * test/unit/bus_topic_match_test.c
 *      Topic routing follows RabbitMQ's topic exchange: '*' is one word,
 *      '#' is zero or more; invalid keys and patterns are refused.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <string.h>
#include <cmocka.h>

#include "bus/topic_match.h"

static void
exact_words_match_only_themselves(void **state)
{
    (void) state;
    assert_true(svcbus_topic_match("orders.created", "orders.created"));
    assert_false(svcbus_topic_match("orders.created", "orders.deleted"));
    assert_false(svcbus_topic_match("orders.created", "orders.created.eu"));
    assert_false(svcbus_topic_match("orders", "orders.created"));
}

static void
star_is_exactly_one_word(void **state)
{
    (void) state;
    assert_true(svcbus_topic_match("orders.*", "orders.created"));
    assert_false(svcbus_topic_match("orders.*", "orders"));
    assert_false(svcbus_topic_match("orders.*", "orders.created.eu"));
    assert_true(svcbus_topic_match("*.created.*", "orders.created.eu"));
    assert_false(svcbus_topic_match("*", "a.b"));
}

static void
hash_is_zero_or_more_words(void **state)
{
    (void) state;
    assert_true(svcbus_topic_match("#", "a"));
    assert_true(svcbus_topic_match("#", "a.b.c"));
    assert_true(svcbus_topic_match("orders.#", "orders"));
    assert_true(svcbus_topic_match("orders.#", "orders.created.eu"));
    assert_true(svcbus_topic_match("#.eu", "orders.created.eu"));
    assert_true(svcbus_topic_match("#.eu", "eu"));
    assert_false(svcbus_topic_match("#.eu", "orders.created.us"));
    assert_true(svcbus_topic_match("a.#.z", "a.z"));
    assert_true(svcbus_topic_match("a.#.z", "a.b.c.z"));
    assert_false(svcbus_topic_match("a.#.z", "a.b.c"));
    assert_true(svcbus_topic_match("#.*.#", "x"));
    assert_false(svcbus_topic_match("#.*.*", "x"));
}

/* Many '#' against a long key stays fast (memoised, not exponential). */
static void
many_hashes_do_not_explode(void **state)
{
    char        pattern[256];
    char        key[256];

    (void) state;
    strcpy(pattern, "#.#.#.#.#.#.#.#.#.#.#.#.#.#.#.#.#.#.#.#.#.#.#.#.#.#.#.#.#.#.nomatch");
    key[0] = '\0';
    for (int i = 0; i < 60; i++)
        strcat(key, i ? ".a" : "a");
    assert_false(svcbus_topic_match(pattern, key));
}

static void
invalid_keys_and_patterns_are_refused(void **state)
{
    char        long_key[300];

    (void) state;
    assert_null(svcbus_topic_check_key("orders.created"));
    assert_null(svcbus_topic_check_key("tenant:42/orders.created"));
    assert_non_null(svcbus_topic_check_key(""));
    assert_non_null(svcbus_topic_check_key("a..b"));
    assert_non_null(svcbus_topic_check_key(".a"));
    assert_non_null(svcbus_topic_check_key("a."));
    assert_non_null(svcbus_topic_check_key("a.*"));
    assert_non_null(svcbus_topic_check_key("a b"));
    assert_non_null(svcbus_topic_check_key("a';--"));
    memset(long_key, 'a', 299);
    long_key[299] = '\0';
    assert_non_null(svcbus_topic_check_key(long_key));

    assert_null(svcbus_topic_check_pattern("orders.*.#"));
    assert_non_null(svcbus_topic_check_pattern("orders.*x"));
    assert_non_null(svcbus_topic_check_pattern("or#ders"));
    assert_non_null(svcbus_topic_check_pattern("a..#"));
    assert_non_null(svcbus_topic_check_pattern("a:b"));
    assert_non_null(svcbus_topic_check_pattern(NULL));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(exact_words_match_only_themselves),
        cmocka_unit_test(star_is_exactly_one_word),
        cmocka_unit_test(hash_is_zero_or_more_words),
        cmocka_unit_test(many_hashes_do_not_explode),
        cmocka_unit_test(invalid_keys_and_patterns_are_refused),
    };

    return cmocka_run_group_tests_name("bus_topic_match", tests, NULL, NULL);
}
