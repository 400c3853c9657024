/*
 * bus/cluster_snapshot.h
 *      A snapshot of the replicated state machines: the bytes of their
 *      arenas at one applied slot, as a sparse image (only the pages that
 *      differ from a freshly initialised arena, the template), with the
 *      slot, the cluster time and the log digest it was taken at.  A node that installs it holds exactly the
 *      state the taker had after applying that slot, byte for byte (the
 *      arenas hold offsets, never pointers, so the bytes mean the same in
 *      every process of every member of equal settings).
 *
 * Pure C: no PostgreSQL.  An image comes from the network and is
 * untrusted: decode checks every length, the arena sizes (a member with
 * other svcbus.cluster_* sizes cannot use it) and a checksum before it
 * writes a byte.
 *
 * Image (little-endian):
 *   magic u32 'SBS1' | version u32 | slot i64 | time i64 | digest u64 |
 *   areas u32 | area size u64 * areas |
 *   page* := area u32 | page u32 | bytes[min(PAGE, area size - page * PAGE)] |
 *   end := 0xffffffff u32 | checksum u64 (FNV-1a of everything before it)
 */
#ifndef SVCBUS_CLUSTER_SNAPSHOT_H
#define SVCBUS_CLUSTER_SNAPSHOT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SVCBUS_SNAPSHOT_MAGIC   0x31534253u     /* "SBS1" */
#define SVCBUS_SNAPSHOT_VERSION 1u
#define SVCBUS_SNAPSHOT_PAGE    4096u
#define SVCBUS_SNAPSHOT_AREAS   4

/* One arena of the state: where it is and how big. */
typedef struct SvcbusSnapArea
{
    uint8_t    *base;
    const uint8_t *tmpl;            /* the area freshly initialised (NULL: all zero) */
    size_t      size;
} SvcbusSnapArea;

/* What the image says of itself. */
typedef struct SvcbusSnapMeta
{
    int64_t     slot;               /* last slot applied to the state */
    int64_t     time_ms;            /* cluster time of that slot */
    uint64_t    digest;             /* rolling digest of the log up to it */
} SvcbusSnapMeta;

typedef enum SvcbusSnapRc
{
    SVCBUS_SNAP_OK = 0,
    SVCBUS_SNAP_MALFORMED,          /* truncated, bad magic or version, pages out of bounds */
    SVCBUS_SNAP_SIZES,              /* taken with other arena sizes */
    SVCBUS_SNAP_CHECKSUM            /* damaged */
} SvcbusSnapRc;

/* Exact size of the image of these areas. */
size_t      svcbus_snapshot_size(const SvcbusSnapArea *areas, int n);

/* Write the image into buf (svcbus_snapshot_size bytes); bytes written, 0 if cap is short. */
size_t      svcbus_snapshot_encode(uint8_t *buf, size_t cap, const SvcbusSnapMeta *meta,
                                   const SvcbusSnapArea *areas, int n);

/* Read the image's header only (no checksum check); false if malformed. */
bool        svcbus_snapshot_peek(const uint8_t *img, size_t len, SvcbusSnapMeta *meta);

/* Check the whole image against these areas (count, sizes, bounds, checksum); writes nothing. */
SvcbusSnapRc svcbus_snapshot_check(const uint8_t *img, size_t len, SvcbusSnapMeta *meta,
                                   const SvcbusSnapArea *areas, int n);

/*
 * Write a checked image's pages into areas that hold their template (the
 * caller re-initialised them after svcbus_snapshot_check said OK).
 */
void        svcbus_snapshot_apply(const uint8_t *img, size_t len, const SvcbusSnapArea *areas, int n);

/*
 * Both, with the template copied in between (tmpl, or zeros): nothing is
 * written unless SVCBUS_SNAP_OK is returned.
 */
SvcbusSnapRc svcbus_snapshot_decode(const uint8_t *img, size_t len, SvcbusSnapMeta *meta,
                                    const SvcbusSnapArea *areas, int n);

const char *svcbus_snapshot_rc_name(SvcbusSnapRc rc);

#endif                          /* SVCBUS_CLUSTER_SNAPSHOT_H */
