/*
 * bus/topic_match.c
 *      Topic pattern matching (see topic_match.h).
 *
 * Matching walks the pattern and key word by word; '#' is handled by
 * trying every split, memoised over (pattern word, key word) so the cost
 * is at most (pattern words x key words), never exponential.
 */
#include "bus/topic_match.h"

#include <string.h>

#define MAX_WORDS 128

static bool
word_char(char c, bool in_key)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
        (c >= '0' && c <= '9') || c == '_' || c == '-' ||
        (in_key && (c == ':' || c == '/'));
}

static const char *
check(const char *s, bool pattern)
{
    size_t      len;
    size_t      wlen = 0;
    bool        wild = false;

    if (s == NULL || *s == '\0')
        return pattern ? "binding pattern is empty" : "routing key is empty";
    len = strlen(s);
    if (len > SVCBUS_TOPIC_KEY_MAX)
        return pattern ? "binding pattern is longer than 255 bytes" :
            "routing key is longer than 255 bytes";
    for (size_t i = 0; i <= len; i++)
    {
        char        c = s[i];

        if (c == '.' || c == '\0')
        {
            if (wlen == 0)
                return "empty word (two dots, or a dot at either end)";
            wlen = 0;
            wild = false;
            continue;
        }
        if (pattern && (c == '*' || c == '#'))
        {
            if (wlen > 0)
                return "a wildcard must be a whole word";
            wild = true;
            wlen++;
            continue;
        }
        if (wild)
            return "a wildcard must be a whole word";
        if (!word_char(c, !pattern))
            return pattern ? "binding patterns are words of letters, digits, \"_\" and \"-\", or \"*\" or \"#\", separated by \".\"" :
                "routing keys are words of letters, digits, \"_\", \"-\", \":\" and \"/\", separated by \".\"";
        wlen++;
    }
    return NULL;
}

const char *
svcbus_topic_check_key(const char *key)
{
    return check(key, false);
}

const char *
svcbus_topic_check_pattern(const char *pattern)
{
    return check(pattern, true);
}

typedef struct Words
{
    int         n;
    const char *w[MAX_WORDS];
    int         len[MAX_WORDS];
} Words;

static bool
split(const char *s, Words *out)
{
    const char *start = s;

    out->n = 0;
    for (const char *p = s;; p++)
    {
        if (*p == '.' || *p == '\0')
        {
            if (out->n == MAX_WORDS)
                return false;
            out->w[out->n] = start;
            out->len[out->n] = (int) (p - start);
            out->n++;
            if (*p == '\0')
                return true;
            start = p + 1;
        }
    }
}

/* memo: 0 unknown, 1 false, 2 true */
static bool
match_from(const Words *pat, int i, const Words *key, int j,
           unsigned char memo[MAX_WORDS + 1][MAX_WORDS + 1])
{
    bool        r;

    if (memo[i][j])
        return memo[i][j] == 2;
    if (i == pat->n)
        r = (j == key->n);
    else if (pat->len[i] == 1 && pat->w[i][0] == '#')
        r = match_from(pat, i + 1, key, j, memo) ||
            (j < key->n && match_from(pat, i, key, j + 1, memo));
    else if (j == key->n)
        r = false;
    else if (pat->len[i] == 1 && pat->w[i][0] == '*')
        r = match_from(pat, i + 1, key, j + 1, memo);
    else
        r = pat->len[i] == key->len[j] &&
            memcmp(pat->w[i], key->w[j], pat->len[i]) == 0 &&
            match_from(pat, i + 1, key, j + 1, memo);
    memo[i][j] = r ? 2 : 1;
    return r;
}

bool
svcbus_topic_match(const char *pattern, const char *key)
{
    Words       p,
                k;
    static unsigned char memo[MAX_WORDS + 1][MAX_WORDS + 1];

    if (!split(pattern, &p) || !split(key, &k))
        return false;
    for (int i = 0; i <= p.n; i++)
        memset(memo[i], 0, k.n + 1);
    return match_from(&p, 0, &k, 0, memo);
}
