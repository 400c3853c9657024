/*
 * extension/cluster_api.h
 *      Helpers the cluster's SQL functions share (extension/cluster_api.c).
 */
#ifndef SVCBUS_CLUSTER_API_H
#define SVCBUS_CLUSTER_API_H

#include "bus/cluster.h"

/* The cluster, or SB203 when this server is not a member. */
extern SvcbusClusterShared *svcbus_cluster_require_member(void);

/* Replicate one command and wait for this node to apply it (SB201/SB202/SB209). */
extern void svcbus_cluster_submit(uint8 sm, const uint8 *payload, size_t len,
                                  SvcbusClusterResult *out);

/* Before a read: a read index and the wait for it, or the staleness check (SB204). */
extern void svcbus_cluster_read_barrier(SvcbusClusterShared *c, bool stale);

/*
 * Ask this node's worker for a read index (bus/README-paxos.md, "Reads"):
 * a slot such that every write acknowledged before the call is at or below
 * it.  -1 if none came before `deadline`.
 */
extern int64 svcbus_cluster_read_index(SvcbusClusterShared *c, TimestampTz deadline);

/*
 * Lost-state detection (extension/cluster_acceptor.c): this node's identity
 * (system identifier, durable WAL position; the incarnation is the
 * acceptor row's), and what it saw of its peers'.
 */
extern void svcbus_paxos_identity(int64 *sysid, int64 *lsn);
extern int  svcbus_paxos_peer_index(SvcbusClusterShared *c, int64 id);
extern void svcbus_paxos_load_seen(SvcbusClusterShared *c);     /* SPI connected */
extern void svcbus_paxos_saw(SvcbusClusterShared *c, int64 id, int64 sysid, int64 inc,
                             int64 lsn);

#endif                          /* SVCBUS_CLUSTER_API_H */
