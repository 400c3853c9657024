/*
 * bus/topic_match.h
 *      Topic routing: RabbitMQ topic-exchange semantics.  Pure functions,
 *      no PostgreSQL dependency (unit-tested with cmocka).
 *
 * A routing key is a list of words separated by '.'; a binding pattern is
 * the same with two wildcards: '*' stands for exactly one word, '#' for
 * zero or more words.  Words are 1..255 bytes of [A-Za-z0-9_-] (keys also
 * allow ':' and '/'); the whole key or pattern is at most 255 bytes.
 */
#ifndef SVCBUS_TOPIC_MATCH_H
#define SVCBUS_TOPIC_MATCH_H

#include <stdbool.h>

#define SVCBUS_TOPIC_KEY_MAX 255

/* NULL if key is a valid routing key, else a message saying why not. */
const char *svcbus_topic_check_key(const char *key);

/* NULL if pattern is a valid binding pattern, else a message saying why not. */
const char *svcbus_topic_check_pattern(const char *pattern);

/* Does routing key `key` match binding `pattern`?  Both must be valid. */
bool        svcbus_topic_match(const char *pattern, const char *key);

#endif
