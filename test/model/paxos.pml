/*
 * test/model/paxos.pml -- Promela model of svcbus's Multi-Paxos
 * (bus/README-paxos.md, "the protocol as shipped").  Checked with spin by
 * test/model/run_spin.sh; what is modelled, what is abstracted and why the
 * abstraction is sound: test/model/README.md.
 *
 * One process runs a loop whose every option is one atomic protocol event
 * (a d_step): a node starts an election, an acceptor handles a prepare or
 * an accept taken from the network, a leader proposes or sends, a learner
 * applies a slot, a node crashes and restarts, a proposer steps down.
 *
 * Bounds and variants are cpp macros (spin -DNAME=value -a paxos.pml):
 *   NP      proposers: nodes 1..NP can lead (2 or 3); every node is an
 *           acceptor and a learner (N = 3 nodes)
 *   S       log slots (2 or 3)
 *   E       elections each proposer may start (1..3)
 *   RMAX    highest round (ballot = round * 4 + node id, see below)
 *   QUORUM  the protocol's quorum for both phases (default N/2 + 1)
 *   SEED    where a candidate's "highest round it has seen" comes from:
 *           0  the shared-memory hint cs->promised, zeroed when the node
 *              restarts (bgworkers/paxos_worker.c as shipped)
 *           1  the node's own acceptor's durable promise
 *           2  like 1, and the candidate promises its own ballot durably
 *              before it asks anyone else (the fix; the default)
 *   LOST    1 (default): a node may lose acknowledged state once (its
 *           data directory restored from a copy taken earlier: SNAP then
 *           RESTORE); it does not vote until it has run phase 1 at a
 *           ballot of its own on every other member and accepted what it
 *           found (bus/README-paxos.md, "Lost state"); 0: never
 * Mutations (each must produce a counterexample):
 *   MUT_ADOPT_FIRST   the candidate keeps the first value a promise reports
 *                     for a slot instead of the highest accepted ballot's
 *   MUT_LEARN_NOCHECK the learner applies without accepted_ballot == b
 *   MUT_REC_NONE      a restored node votes at once, with what it remembers
 *   MUT_REC_QUORUM    it recovers from a majority (itself and one other)
 *                     instead of from every other member
 *   MUT_REC_READ      it only reads the others' values and promises (no
 *                     phase 1 of its own: the first version of the code)
 * Code-as-shipped variants (bgworkers/paxos_worker.c,
 * extension/cluster_acceptor.c), where they differ from the README:
 *   CODE_COMMIT_INIT  a new leader's commit starts at its own applied index
 *                     (become_leader: commit_idx = cs->applied), capped by
 *                     last_slot only when it advances
 *   CODE_STORE        an accept does not overwrite an entry already held at
 *                     the same ballot (ON CONFLICT ... WHERE l.ballot <> ...)
 */

#ifndef N
#define N 3
#endif
#ifndef NP
#define NP 2
#endif
#ifndef S
#define S 2
#endif
#ifndef E
#define E 2
#endif
#ifndef RMAX
#define RMAX 2
#endif
#ifndef QUORUM
#define QUORUM (N / 2 + 1)
#endif
#ifndef SEED
#define SEED 2
#endif
#ifndef TRUNC
#define TRUNC 1                 /* snapshots and log truncation */
#endif
#ifndef LOST
#define LOST 1
#endif

#define GQ (N / 2 + 1)          /* "chosen" always means a true majority */
#define SS (S + 1)              /* slots are 1..S; index 0 unused */

#define FOLLOWER  0
#define CANDIDATE 1
#define LEADER    2

/* Values: 0 none, 1 the no-op batch, 2.. a fresh batch, one per
 * (proposer, election) and slot. */
#define NOOP 1
#define FRESH(i, t) (2 + (i) * E + (t) - 1)

/* Ballot = round * 4 + node id (node ids 1..3 < 4): the same order and the
 * same uniqueness as the shipped round * 256 + node id. */
#define BAL(r, i)  ((r) * 4 + (i) + 1)
#define ROUND(b)   ((b) / 4)

/* term t (1..E) of proposer i: its t-th election, a ghost that survives
 * crashes; it names one leadership attempt even if a ballot is reused. */
#define TI(i, t)   ((i) * E + (t) - 1)
/* Accept messages of one term: bit s * SS + c is "accept(b, slot s (0 =
 * heartbeat, no entries), commit c)".  Never cleared: the network may
 * deliver any message any number of times, late, or never. */
#define MB(s, c)   (1 << ((s) * SS + (c)))

#define NPROM(p)   (((p) & 1) + (((p) >> 1) & 1) + (((p) >> 2) & 1))

typedef Acc {
    byte prom;          /* durable: promised ballot */
    byte ab[SS];        /* durable: accepted_ballot per slot */
    byte av[SS];        /* durable: accepted value per slot */
    byte lb;            /* volatile: (b, commit) pair of the latest leader */
    byte lc;
    byte applied;       /* durable: learner's applied index */
    byte appv[SS];      /* ghost: value this node applied at each slot */
    byte hint;          /* volatile: cs->promised (SEED 0 only) */
    bit  rec;           /* durable: recovering, no vote */
    byte tr;            /* durable: slots <= tr are in the snapshot, gone from the log */
}

/* An old copy of a node's durable state, and a recovery in progress. */
typedef Old {
    bit  taken;
    byte prom;
    byte ab[SS];
    byte av[SS];
    byte applied;
    byte tr;
}
typedef Rec {
    byte bal;           /* its phase-1 ballot, 0 = none yet */
    byte mask;          /* members that promised it */
    byte rp;            /* highest promise read (MUT_REC_READ) */
    byte rb[SS];        /* highest accepted ballot read per slot ... */
    byte rv[SS];        /* ... and its value */
}

typedef Prop {
    byte role;
    byte term;          /* ghost: elections started so far (durable) */
    byte maxr;          /* volatile: highest round seen */
    byte from;          /* candidate/leader: prepare's from = applied + 1 */
    byte pprom;         /* candidate: bitmask of promises counted */
    byte rb[SS];        /* candidate: highest accepted ballot seen per slot */
    byte last;          /* leader: highest slot in its log */
    byte pm[N];         /* leader: match per member (0 = unknown) */
    byte commit;        /* leader: commit index */
}

typedef Term {
    byte bal;           /* ballot of this election */
    byte lg[SS];        /* leader's value per slot (candidate: recovered) */
}

Acc  A[N];
Prop P[NP];
Term T[NP * E];
int  msgs[NP * E];      /* the network: accept messages sent, per term */
byte chosen[SS];        /* ghost: value chosen at each slot, 0 = none yet */
Old  O[N];
Rec  R[N];
/* ghost: acceptors that ever accepted slot s at ballot b, and the value, at
 * s * NB + b: "chosen" is "a majority accepted it at one ballot", whether or
 * not they still hold it. */
#define NB (4 * (RMAX + 1))
byte ackm[SS * NB];
byte ackv[SS * NB];
byte restores;          /* state losses so far (at most LOST) */

/* scratch of one d_step, not part of the state */
hidden byte hb, hv, hm, hx, hc, hs, hk, hj, hn;

/* ------------------------------------------------------------------ */

/* The leader's value for every slot up to its commit is the chosen one,
 * and every slot up to its commit is chosen. */
inline check_leader(i)
{
    hj = 1;
    do
    :: hj <= P[i].commit && hj <= S ->
        assert(chosen[hj] != 0);
        assert(T[TI(i, P[i].term)].lg[hj] == 0 ||
               T[TI(i, P[i].term)].lg[hj] == chosen[hj]);
        hj++
    :: else -> break
    od;
    assert(P[i].commit <= S)
}

/* Acceptor a stores (s, b, v); the ghost notes a value accepted by a
 * majority at one ballot, and asserts agreement. */
inline store(a, s, b, v)
{
#ifdef CODE_STORE
    if
    :: A[a].ab[s] != b -> A[a].ab[s] = b; A[a].av[s] = v
    :: else -> skip
    fi;
#else
    A[a].ab[s] = b; A[a].av[s] = v;
#endif
    hn = 0; hk = 0;
    do
    :: hk < N ->
        if
        :: A[hk].ab[s] == A[a].ab[s] && A[hk].av[s] == A[a].av[s] -> hn++
        :: else -> skip
        fi;
        hk++
    :: else -> break
    od;
    if
    :: hn >= GQ ->
        assert(chosen[s] == 0 || chosen[s] == A[a].av[s]);   /* agreement */
        chosen[s] = A[a].av[s]
    :: else -> skip
    fi;
    /* "chosen" is "a majority ever accepted it at one ballot", whether or
     * not they still hold it: an acceptor may since have accepted it again
     * at a higher ballot, forgotten it (lost state) or truncated it */
    hk = s * NB + A[a].ab[s];
    if
    :: ackv[hk] != A[a].av[s] -> ackv[hk] = A[a].av[s]; ackm[hk] = 0
    :: else -> skip
    fi;
    ackm[hk] = ackm[hk] | (1 << a);
    if
    :: NPROM(ackm[hk]) >= GQ ->
        assert(chosen[s] == 0 || chosen[s] == A[a].av[s]);   /* agreement */
        chosen[s] = A[a].av[s]
    :: else -> skip
    fi
}

inline note_promise(a, b)
{
    A[a].prom = b;
#if SEED == 0
    if
    :: b > A[a].hint -> A[a].hint = b
    :: else -> skip
    fi
#else
    skip
#endif
}

/* The candidate i takes acceptor a's promise: entries for slot >= from. */
inline recover(i, a)
{
    hs = P[i].from;
    do
    :: hs <= S ->
        if
#ifdef MUT_ADOPT_FIRST
        :: A[a].ab[hs] > 0 && P[i].rb[hs] == 0 ->
#else
        :: A[a].ab[hs] > P[i].rb[hs] ->
#endif
            P[i].rb[hs] = A[a].ab[hs];
            T[TI(i, P[i].term)].lg[hs] = A[a].av[hs]
        :: else -> skip
        fi;
        hs++
    :: else -> break
    od;
    P[i].pprom = P[i].pprom | (1 << a)
}

/* Q promises: the value of each slot >= from is the highest ballot's,
 * holes up to the highest slot seen become no-ops. */
inline become_leader(i)
{
    hk = P[i].from - 1;
    hs = P[i].from;
    do
    :: hs <= S ->
        if
        :: P[i].rb[hs] > 0 -> hk = hs
        :: else -> skip
        fi;
        P[i].rb[hs] = 0;
        hs++
    :: else -> break
    od;
    hs = P[i].from;
    do
    :: hs <= hk ->
        if
        :: T[TI(i, P[i].term)].lg[hs] == 0 -> T[TI(i, P[i].term)].lg[hs] = NOOP
        :: else -> skip
        fi;
        hs++
    :: else -> break
    od;
    P[i].last = hk;
    P[i].pprom = 0;
    hs = 0;
    do
    :: hs < N -> P[i].pm[hs] = 0; hs++
    :: else -> break
    od;
    P[i].role = LEADER;
#ifdef CODE_COMMIT_INIT
    P[i].commit = A[i].applied;
    check_leader(i);
#else
    P[i].commit = 0;
#endif
}

inline maybe_lead(i)
{
    if
    :: NPROM(P[i].pprom) >= QUORUM -> become_leader(i)
    :: else -> skip
    fi
}

/* commit = the Q-th highest match */
inline advance(i)
{
    hc = 0; hj = 0;
    do
    :: hj < N ->
        hx = P[i].pm[hj]; hn = 0; hk = 0;
        do
        :: hk < N ->
            if
            :: P[i].pm[hk] >= hx -> hn++
            :: else -> skip
            fi;
            hk++
        :: else -> break
        od;
        if
        :: hn >= QUORUM && hx > hc -> hc = hx
        :: else -> skip
        fi;
        hj++
    :: else -> break
    od;
#ifdef CODE_COMMIT_INIT
    if
    :: hc > P[i].last -> hc = P[i].last
    :: else -> skip
    fi;
#endif
    if
    :: hc > P[i].commit -> P[i].commit = hc; check_leader(i)
    :: else -> skip
    fi
}

inline clear_leadership(i)
{
    P[i].role = FOLLOWER;
    P[i].from = 0;
    P[i].pprom = 0;
    P[i].last = 0;
    P[i].commit = 0;
    hs = 0;
    do
    :: hs < SS -> P[i].rb[hs] = 0; hs++
    :: else -> break
    od;
    hs = 0;
    do
    :: hs < N -> P[i].pm[hs] = 0; hs++
    :: else -> break
    od
}

/* ------------------------------------------------------------------ */
/* Events */

/* Node i starts an election in round r (any round above the highest it
 * has seen: a reject can have shown it any higher round). */
#if SEED == 0
#define SEEN(i) (ROUND(A[i].hint))
#else
#define SEEN(i) (ROUND(A[i].prom))
#endif

#if SEED == 2
#define OWN_PROMISE(i) hb = T[TI(i, P[i].term)].bal; note_promise(i, hb); recover(i, i); maybe_lead(i)
#else
#define OWN_PROMISE(i) skip
#endif

#define OPT_START(i, r) \
    :: d_step { P[i].role != LEADER && P[i].term < E && r > P[i].maxr && r > SEEN(i) && !A[i].rec -> \
        clear_leadership(i); \
        P[i].maxr = r; P[i].term++; \
        T[TI(i, P[i].term)].bal = BAL(r, i); \
        P[i].role = CANDIDATE; \
        P[i].from = A[i].applied + 1; \
        OWN_PROMISE(i); skip }

/* Acceptor a handles the current candidate i's prepare and the reply
 * reaches it. */
/* A prepare from a slot at or below the acceptor's truncation point is
 * refused (svcbus._paxos_prepare state 3): no promise without the values. */
#if defined(MUT_TRUNC_PROMISE) || TRUNC == 0
#define PREP_TRUNC_OK(a, i) 1
#else
#define PREP_TRUNC_OK(a, i) (P[i].from > A[a].tr)
#endif
#define OPT_PREP(a, i) \
    :: d_step { P[i].role == CANDIDATE && !(P[i].pprom & (1 << a)) && !A[a].rec && \
                T[TI(i, P[i].term)].bal >= A[a].prom && PREP_TRUNC_OK(a, i) -> \
        hb = T[TI(i, P[i].term)].bal; note_promise(a, hb); \
        recover(i, a); \
        maybe_lead(i); skip }

/* Acceptor a handles a prepare of proposer i's term t whose reply is lost
 * or comes too late (a delayed or duplicated prepare). */
#define OPT_PREP_LOST(a, i, t) \
    :: d_step { P[i].term >= t && T[TI(i, t)].bal > A[a].prom && !A[a].rec -> \
        hb = T[TI(i, t)].bal; note_promise(a, hb); skip }

/* Leader i appends a new batch. */
#define OPT_APPEND(i) \
    :: d_step { P[i].role == LEADER && P[i].last < S -> \
        P[i].last++; \
        T[TI(i, P[i].term)].lg[P[i].last] = FRESH(i, P[i].term); \
        check_leader(i); skip }

/* Leader i sends accept(b, slot s, commit) (s = 0: heartbeat). */
#define OPT_SEND(i, s) \
    :: d_step { P[i].role == LEADER && s <= S && \
                (s == 0 || (s >= P[i].from && s <= P[i].last)) && \
                !(msgs[TI(i, P[i].term)] & MB(s, P[i].commit)) -> \
        msgs[TI(i, P[i].term)] = msgs[TI(i, P[i].term)] | MB(s, P[i].commit); skip }

/* Acceptor a handles accept(b, s, c) of proposer i's term t; when b >=
 * promised it stores the entry, records (b, c) and replies match, which
 * proposer i uses if it is still leader in that term. */
#define OPT_ACC(a, i, t, s, c) \
    :: d_step { s <= S && c <= S && (msgs[TI(i, t)] & MB(s, c)) && \
                T[TI(i, t)].bal >= A[a].prom && !A[a].rec -> \
        hb = T[TI(i, t)].bal; \
        note_promise(a, hb); \
        if \
        :: s > A[a].tr -> hv = T[TI(i, t)].lg[s]; store(a, s, hb, hv) \
        :: else -> skip \
        fi; \
        hm = A[a].applied; \
        do \
        :: hm < S && A[a].ab[hm + 1] == hb -> hm++ \
        :: else -> break \
        od; \
        if \
        :: hb > A[a].lb -> A[a].lb = hb; A[a].lc = c \
        :: hb == A[a].lb && c > A[a].lc -> A[a].lc = c \
        :: else -> skip \
        fi; \
        if \
        :: P[i].role == LEADER && P[i].term == t && hm > P[i].pm[a] -> \
            P[i].pm[a] = hm; advance(i) \
        :: else -> skip \
        fi; skip }

#ifdef MUT_LEARN_NOCHECK
#define LEARN_OK(n) (A[n].ab[A[n].applied + 1] != 0)
#else
#define LEARN_OK(n) (A[n].ab[A[n].applied + 1] == A[n].lb)
#endif

/* Node n's learner applies slot applied + 1. */
#define OPT_APPLY(n) \
    :: d_step { A[n].applied < S && A[n].applied + 1 <= A[n].lc && A[n].lb > 0 && LEARN_OK(n) -> \
        hs = A[n].applied + 1; hv = A[n].av[hs]; \
        assert(hv != 0 && chosen[hs] == hv);   /* applied implies chosen */ \
        hk = 0; \
        do \
        :: hk < N -> assert(A[hk].appv[hs] == 0 || A[hk].appv[hs] == hv); hk++ \
        :: else -> break \
        od; \
        A[n].appv[hs] = hv; \
        A[n].applied = hs; skip }

/* Node n crashes and restarts; its stored applied index may be an older
 * one (k <= applied: the learner's update is committed asynchronously).
 * The restart replays its own accepted entries up to k: they must be what
 * it applied. */
#define CRASH_COMMON(n, k) \
        hs = A[n].tr + 1; \
        do \
        :: hs <= k -> assert(A[n].av[hs] == A[n].appv[hs]); hs++ \
        :: else -> break \
        od; \
        A[n].applied = k; A[n].lb = 0; A[n].lc = 0; A[n].hint = 0; \
        R[n].bal = 0; R[n].mask = 0; R[n].rp = 0

#define OPT_CRASH_P(n, k) \
    :: d_step { k <= A[n].applied && k >= A[n].tr -> \
        CRASH_COMMON(n, k); \
        clear_leadership(n); P[n].maxr = 0; skip }

#define OPT_CRASH_A(n, k) \
    :: d_step { k <= A[n].applied && k >= A[n].tr -> CRASH_COMMON(n, k); skip }

/* Lost state.  SNAP: a copy of node n's durable state is taken.  RESTORE:
 * node n crashes and restarts from that copy (forgetting what it promised
 * and accepted since); peers detect it (the detection is the code's, by
 * system identifier and WAL position), so it is recovering. */
#define OPT_SNAP(n) \
    :: d_step { !O[n].taken && restores < LOST -> \
        O[n].taken = 1; O[n].prom = A[n].prom; O[n].applied = A[n].applied; O[n].tr = A[n].tr; \
        hs = 0; \
        do \
        :: hs < SS -> O[n].ab[hs] = A[n].ab[hs]; O[n].av[hs] = A[n].av[hs]; hs++ \
        :: else -> break \
        od; skip }

#ifdef MUT_REC_NONE
#define LOSE_MARK(n) skip
#else
#define LOSE_MARK(n) A[n].rec = 1
#endif

#define OPT_RESTORE(n) \
    :: d_step { O[n].taken && restores < LOST -> \
        restores++; \
        A[n].prom = O[n].prom; A[n].tr = O[n].tr; \
        hs = 0; \
        do \
        :: hs < SS -> A[n].ab[hs] = O[n].ab[hs]; A[n].av[hs] = O[n].av[hs]; \
                      R[n].rb[hs] = 0; R[n].rv[hs] = 0; hs++ \
        :: else -> break \
        od; \
        CRASH_COMMON(n, O[n].applied); \
        R[n].mask = 0; R[n].rp = 0; R[n].bal = 0; \
        LOSE_MARK(n); \
        if \
        :: n < NP -> clear_leadership(n); P[n].maxr = 0 \
        :: else -> skip \
        fi; skip }

/* Recovering node n picks a ballot of round r above its own promise and
 * promises it to itself (durably, as a candidate does). */
#define OPT_REC_BEGIN(n, r) \
    :: d_step { A[n].rec && R[n].bal == 0 && BAL(r, n) > A[n].prom -> \
        R[n].bal = BAL(r, n); hb = R[n].bal; note_promise(n, hb); skip }

/* Member m answers n's recovery: when n's ballot > its promise, it
 * promises it and reports its accepted values from n's applied index on
 * (one call, atomic at m: svcbus._paxos_recover).  Otherwise n starts
 * over with a higher ballot. */
#ifdef MUT_REC_READ
#define REC_PROMISE(n, m) \
        if \
        :: A[m].prom > R[n].rp -> R[n].rp = A[m].prom \
        :: else -> skip \
        fi
#define REC_OK(n, m) (R[n].bal > 0)
#else
#define REC_PROMISE(n, m) hb = R[n].bal; note_promise(m, hb)
/* strictly above: an equal promise may be to a ballot n used before it lost
 * state (the same node id), whose values n no longer knows */
#define REC_OK(n, m) (R[n].bal > 0 && R[n].bal > A[m].prom)
#endif

#define OPT_REC_READ(n, m) \
    :: d_step { A[n].rec && !(R[n].mask & (1 << m)) && REC_OK(n, m) && A[m].tr <= A[n].applied -> \
        REC_PROMISE(n, m); \
        hs = A[n].applied + 1; \
        do \
        :: hs <= S -> \
            if \
            :: A[m].ab[hs] > R[n].rb[hs] -> R[n].rb[hs] = A[m].ab[hs]; R[n].rv[hs] = A[m].av[hs] \
            :: else -> skip \
            fi; hs++ \
        :: else -> break \
        od; \
        R[n].mask = R[n].mask | (1 << m); skip } \
    :: d_step { A[n].rec && !(R[n].mask & (1 << m)) && R[n].bal > 0 && !REC_OK(n, m) -> \
        R[n].bal = 0; R[n].mask = 0; \
        hs = 0; \
        do \
        :: hs < SS -> R[n].rb[hs] = 0; R[n].rv[hs] = 0; hs++ \
        :: else -> break \
        od; skip }

#ifdef MUT_REC_QUORUM
#define REC_DONE(n) (NPROM(R[n].mask) >= GQ - 1)
#else
#define REC_DONE(n) (NPROM(R[n].mask) == N - 1)
#endif
#ifdef MUT_REC_READ
/* the first version: keep the labels read, promise the highest promise read */
#define REC_LABEL(n, hx) R[n].rb[hx]
#define REC_PROM(n) if :: R[n].rp > A[n].prom -> A[n].prom = R[n].rp :: else -> skip fi
#else
/* a value found by phase 1 is accepted at n's ballot; one accepted later
 * at a higher ballot keeps it (a copy of that leader's accept) */
#define REC_LABEL(n, hx) (R[n].rb[hx] > R[n].bal -> R[n].rb[hx] : R[n].bal)
#define REC_PROM(n) \
        hx = 1; \
        do \
        :: hx <= S -> \
            if \
            :: A[n].ab[hx] > A[n].prom -> A[n].prom = A[n].ab[hx] \
            :: else -> skip \
            fi; hx++ \
        :: else -> break \
        od
#endif

/* Every other member answered: accept what was found, vote again. */
#define OPT_REC_FINISH(n) \
    :: d_step { A[n].rec && REC_DONE(n) -> \
        hx = A[n].applied + 1; \
        do \
        :: hx <= S -> \
            if \
            :: R[n].rb[hx] > 0 && REC_LABEL(n, hx) > A[n].ab[hx] -> \
                hb = REC_LABEL(n, hx); store(n, hx, hb, R[n].rv[hx]) \
            :: else -> skip \
            fi; R[n].rb[hx] = 0; R[n].rv[hx] = 0; hx++ \
        :: else -> break \
        od; \
        REC_PROM(n); \
        R[n].mask = 0; R[n].rp = 0; R[n].bal = 0; A[n].rec = 0; skip }

#if RMAX >= 3
#define REC_B3(n) OPT_REC_BEGIN(n, 3)
#else
#define REC_B3(n)
#endif
#if RMAX >= 2
#define REC_B2(n) OPT_REC_BEGIN(n, 2)
#else
#define REC_B2(n)
#endif
#define REC_BEGINS(n) OPT_REC_BEGIN(n, 1) REC_B2(n) REC_B3(n)

#if LOST > 0
#define LOSS(n, m1, m2) OPT_SNAP(n) OPT_RESTORE(n) REC_BEGINS(n) OPT_REC_READ(n, m1) OPT_REC_READ(n, m2) OPT_REC_FINISH(n)
#else
#define LOSS(n, m1, m2)
#endif

/* Node n snapshots its applied state and truncates its log up to it. */
#define OPT_TRUNC(n) \
    :: d_step { A[n].applied > A[n].tr -> \
        A[n].tr = A[n].applied; \
        hs = 1; \
        do \
        :: hs <= A[n].tr -> A[n].ab[hs] = 0; A[n].av[hs] = 0; hs++ \
        :: else -> break \
        od; skip }

/* Node n (not leading) installs member m's snapshot, ahead of its own
 * applied index: m's applied state, its own log truncated up to it.  A
 * candidate steps back first; a recovery starts over after it. */
#define OPT_INSTALL(n, m) \
    :: d_step { A[m].applied > A[n].applied && !(n < NP && P[n].role == LEADER) -> \
        if \
        :: n < NP && P[n].role == CANDIDATE -> clear_leadership(n) \
        :: else -> skip \
        fi; \
        hs = 1; \
        do \
        :: hs <= A[m].applied -> \
            assert(A[n].appv[hs] == 0 || A[n].appv[hs] == A[m].appv[hs]); \
            A[n].appv[hs] = A[m].appv[hs]; A[n].ab[hs] = 0; A[n].av[hs] = 0; hs++ \
        :: else -> break \
        od; \
        A[n].applied = A[m].applied; A[n].tr = A[m].applied; \
        R[n].bal = 0; R[n].mask = 0; R[n].rp = 0; \
        hs = 0; \
        do \
        :: hs < SS -> R[n].rb[hs] = 0; R[n].rv[hs] = 0; hs++ \
        :: else -> break \
        od; skip }

#if TRUNC > 0
#define SNAPS(n, m1, m2) OPT_TRUNC(n) OPT_INSTALL(n, m1) OPT_INSTALL(n, m2)
#else
#define SNAPS(n, m1, m2)
#endif

/* A candidate or leader gives up (a reject, a timeout, cut off). */
#define OPT_STEP(i) \
    :: d_step { P[i].role != FOLLOWER -> clear_leadership(i); skip }

/* ------------------------------------------------------------------ */
/* Enumerations of the events' parameters */

#if S >= 3
#define C3(M, a, i, t, s) M(a, i, t, s, 3)
#define S3(a, i, t) ACC_C(a, i, t, 3)
#define CRASH3(M, n) M(n, 3)
#define SEND3(i) OPT_SEND(i, 3)
#else
#define C3(M, a, i, t, s)
#define S3(a, i, t)
#define CRASH3(M, n)
#define SEND3(i)
#endif
#define ACC_C(a, i, t, s) OPT_ACC(a, i, t, s, 0) OPT_ACC(a, i, t, s, 1) OPT_ACC(a, i, t, s, 2) C3(OPT_ACC, a, i, t, s)
#define ACC_S(a, i, t) ACC_C(a, i, t, 0) ACC_C(a, i, t, 1) ACC_C(a, i, t, 2) S3(a, i, t)

#if E >= 2
#define T2(M, a, i) M(a, i, 2)
#else
#define T2(M, a, i)
#endif
#if E >= 3
#define T3(M, a, i) M(a, i, 3)
#else
#define T3(M, a, i)
#endif
#define PER_T(M, a, i) M(a, i, 1) T2(M, a, i) T3(M, a, i)

#define ACC_I(a, i) PER_T(ACC_S, a, i)
#define LOST_I(a, i) PER_T(OPT_PREP_LOST, a, i)

#if NP >= 3
#define I3(M, a) M(a, 2)
#else
#define I3(M, a)
#endif
#define PER_I(M, a) M(a, 0) M(a, 1) I3(M, a)

#define R_START(i) OPT_START(i, 1) R2(i) R3(i) R4(i)
#if RMAX >= 2
#define R2(i) OPT_START(i, 2)
#else
#define R2(i)
#endif
#if RMAX >= 3
#define R3(i) OPT_START(i, 3)
#else
#define R3(i)
#endif
#if RMAX >= 4
#define R4(i) OPT_START(i, 4)
#else
#define R4(i)
#endif

#define PROPOSER(i) R_START(i) OPT_APPEND(i) \
    OPT_SEND(i, 0) OPT_SEND(i, 1) OPT_SEND(i, 2) SEND3(i) OPT_STEP(i) \
    OPT_CRASH_P(i, 0) OPT_CRASH_P(i, 1) OPT_CRASH_P(i, 2) CRASH3(OPT_CRASH_P, i)

#define ACCEPTOR(a) PER_I(OPT_PREP, a) PER_I(LOST_I, a) PER_I(ACC_I, a) OPT_APPLY(a)

init {
end:
    do
    LOSS(2, 0, 1)
    LOSS(1, 0, 2)
    LOSS(0, 1, 2)
    PROPOSER(0)
    PROPOSER(1)
#if NP >= 3
    PROPOSER(2)
#else
    OPT_CRASH_A(2, 0) OPT_CRASH_A(2, 1) OPT_CRASH_A(2, 2) CRASH3(OPT_CRASH_A, 2)
#endif
    ACCEPTOR(0)
    ACCEPTOR(1)
    ACCEPTOR(2)
    SNAPS(0, 1, 2)
    SNAPS(1, 0, 2)
    SNAPS(2, 0, 1)
    od
}
