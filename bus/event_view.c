/*
 * bus/event_view.c
 *      Views over the event log, maintained incrementally: create_view()
 *      checks that a query can be maintained from the log alone, and
 *      turns it into a state table, a delta statement and a view.
 *
 * A maintainable query reads svcbus.event_log alone, filters its rows with
 * immutable expressions (stream prefix, type, jsonb fields), groups by
 * immutable expressions and selects group keys and the aggregates count,
 * sum, avg, min and max.  The log is insert-only, so every batch of new
 * events only adds to groups: count and sum add, min and max keep the
 * lesser or greater, avg keeps a sum and a count.  The state table has one
 * row per group (keys k1..kn, the group's row count n, the aggregates'
 * states a1.., with a<i>_c for the count of an avg) and a unique index on
 * the keys with NULLS NOT DISTINCT, so one INSERT ... ON CONFLICT merges a
 * batch's partial aggregates into it:
 *
 *   INSERT INTO state AS t SELECT keys, count(*), partials
 *     FROM svcbus.event_log e WHERE e.position > $1 AND e.position < $2
 *     AND (the query's WHERE) GROUP BY keys HAVING count(*) > 0
 *   ON CONFLICT (keys) DO UPDATE SET n = t.n + excluded.n, ...
 *
 * The projector runs it for each batch below the read horizon, as the
 * view's owner (so the owner's stream rights filter the rows, exactly as
 * they do when the owner runs the query itself), and moves the checkpoint
 * in the same transaction (bus/projection.c).  The view the user reads
 * turns the states into the aggregates' results (avg = sum / count, the
 * same division PostgreSQL's avg performs).
 *
 * Every part of a query that this scheme cannot maintain is refused by
 * name (0A000), before anything is created.
 */
#include "postgres.h"

#include "access/tupdesc.h"
#include "catalog/namespace.h"
#include "catalog/pg_aggregate.h"
#include "catalog/pg_namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "nodes/nodeFuncs.h"
#include "optimizer/clauses.h"
#include "optimizer/optimizer.h"
#include "parser/analyze.h"
#include "parser/parser.h"
#include "parser/parsetree.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/regproc.h"
#include "utils/ruleutils.h"

#include "bus/event.h"
#include "bus/projection.h"
#include "bus/queue.h"
#include "extension/svcbus.h"

#define VIEW_QUERY_MAX 65536

int         svcbus_view_batch = 10000;

static void
refuse(const char *part, const char *hint)
{
    ereport(ERROR,
            (errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
             errmsg("%s cannot be maintained incrementally", part),
             hint ? errhint("%s", hint) : 0));
}

static void
require_immutable(Node *expr, const char *where)
{
    if (contain_mutable_functions(expr))
        ereport(ERROR,
                (errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
                 errmsg("a function that is not immutable in %s cannot be maintained incrementally", where),
                 errdetail("The view is maintained after the events were appended, so every expression must give the same result at any time."),
                 errhint("For times, use an immutable form such as date_trunc('hour', appended_at AT TIME ZONE 'UTC').")));
}

typedef enum AggKind
{
    AGG_COUNT, AGG_SUM, AGG_AVG, AGG_MIN, AGG_MAX
} AggKind;

static AggKind
agg_kind(Aggref *a)
{
    char       *name = get_func_name(a->aggfnoid);
    Oid         nsp = get_func_namespace(a->aggfnoid);

    if (nsp == PG_CATALOG_NAMESPACE && name != NULL)
    {
        if (strcmp(name, "count") == 0)
            return AGG_COUNT;
        if (strcmp(name, "sum") == 0)
            return AGG_SUM;
        if (strcmp(name, "avg") == 0)
            return AGG_AVG;
        if (strcmp(name, "min") == 0)
            return AGG_MIN;
        if (strcmp(name, "max") == 0)
            return AGG_MAX;
    }
    ereport(ERROR,
            (errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
             errmsg("aggregate %s cannot be maintained incrementally", format_procedure(a->aggfnoid)),
             errhint("Use count, sum, avg, min or max.")));
    return AGG_COUNT;           /* keep the compiler quiet */
}

/* Point a syntax error's position into the view's query, not the call. */
static void
query_error_callback(void *arg)
{
    int         pos = geterrposition();

    if (pos > 0)
    {
        errposition(0);
        internalerrposition(pos);
        internalerrquery((const char *) arg);
    }
    errcontext("query of a view over events");
}

/*
 * create_view(name, query), as the calling role.  The view's relation is
 * `name` (schema-qualified or in the first schema of search_path); its
 * state table is svcbus_view_state."name", owned by the caller.
 */
void
svcbus_view_create(const char *name, const char *query, SvcbusViewDef *def)
{
    List       *raw;
    RawStmt    *rs;
    Query      *q;
    RangeTblEntry *rte;
    Oid         log_oid;
    List       *ctx;
    StringInfoData keys_sel, part_sel, part_cols, cols, groupby, upd, user_cols, init_cols, init_vals, coldefs;
    int         nkeys = 0;
    int         nagg = 0;
    ListCell   *lc;
    char       *state;
    char       *rel;
    List       *relname;
    char       *delta;
    char       *init = NULL;
    SvcbusAsOwner as;
    ErrorContextCallback errcb;

    if (strlen(query) > VIEW_QUERY_MAX)
        ereport(ERROR,
                (errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
                 errmsg("view query is too long"),
                 errdetail("It has %zu bytes; the limit is %d.", strlen(query), VIEW_QUERY_MAX)));
    relname = stringToQualifiedNameList(name);
    if (list_length(relname) > 2)
        ereport(ERROR,
                (errcode(ERRCODE_INVALID_NAME),
                 errmsg("invalid view name \"%s\"", svcbus_event_cut(name)),
                 errdetail("A view name is a name or schema.name.")));
    log_oid = get_relname_relid("event_log", get_namespace_oid("svcbus", false));

    errcb.callback = query_error_callback;
    errcb.arg = (void *) query;
    errcb.previous = error_context_stack;
    error_context_stack = &errcb;
    raw = raw_parser(query, RAW_PARSE_DEFAULT);
    if (list_length(raw) != 1 || !IsA(linitial_node(RawStmt, raw)->stmt, SelectStmt))
        ereport(ERROR,
                (errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
                 errmsg("a view over events is one SELECT statement")));
    rs = linitial_node(RawStmt, raw);
    if (((SelectStmt *) rs->stmt)->intoClause != NULL)
        refuse("SELECT INTO", NULL);
    q = parse_analyze_fixedparams(rs, query, NULL, 0, NULL);
    error_context_stack = errcb.previous;

    if (q->cteList != NIL)
        refuse("WITH", NULL);
    if (q->setOperations != NULL)
        refuse("UNION, INTERSECT or EXCEPT", NULL);
    if (list_length(q->rtable) != 1 || list_length(q->jointree->fromlist) != 1 ||
        !IsA(linitial(q->jointree->fromlist), RangeTblRef))
        refuse("a FROM clause other than svcbus.event_log alone (joins, several relations or none)",
               "Read svcbus.event_log alone; join the view's result afterwards.");
    rte = linitial_node(RangeTblEntry, q->rtable);
    if (rte->rtekind != RTE_RELATION || rte->relid != log_oid)
        refuse("a FROM clause other than svcbus.event_log",
               "A view over events reads svcbus.event_log.");
    if (rte->tablesample != NULL)
        refuse("TABLESAMPLE", NULL);
    if (q->hasSubLinks)
        refuse("a subquery", NULL);
    if (q->hasWindowFuncs)
        refuse("a window function", NULL);
    if (q->hasTargetSRFs)
        refuse("a set-returning function", NULL);
    if (q->distinctClause != NIL)
        refuse("DISTINCT", NULL);
    if (q->havingQual != NULL)
        refuse("HAVING", "Filter the view's rows when you read it.");
    if (q->sortClause != NIL)
        refuse("ORDER BY", "Order the view's rows when you read it.");
    if (q->limitCount != NULL || q->limitOffset != NULL)
        refuse("LIMIT or OFFSET", NULL);
    if (q->groupingSets != NIL)
        refuse("GROUPING SETS, ROLLUP or CUBE", NULL);
    if (q->rowMarks != NIL)
        refuse("FOR UPDATE or FOR SHARE", NULL);
    if (!q->hasAggs && q->groupClause == NIL)
        refuse("a query without aggregates or GROUP BY",
               "A view over events aggregates; to keep every event, use a projection.");
    if (q->jointree->quals != NULL)
        require_immutable(q->jointree->quals, "WHERE");

    /* names in the delta and the state are qualified: deparse with only pg_catalog visible */
    svcbus_enter_role(GetUserId(), &as);
    ctx = deparse_context_for("e", log_oid);
    state = psprintf("svcbus_view_state.%s", quote_identifier(name));
    rel = NameListToQuotedString(relname);
    initStringInfo(&keys_sel);
    initStringInfo(&part_sel);
    initStringInfo(&cols);
    initStringInfo(&upd);
    initStringInfo(&user_cols);
    initStringInfo(&init_cols);
    initStringInfo(&init_vals);
    initStringInfo(&part_cols);
    initStringInfo(&groupby);

    /* keys, in GROUP BY order */
    foreach(lc, q->groupClause)
    {
        SortGroupClause *sgc = lfirst_node(SortGroupClause, lc);
        TargetEntry *tle = get_sortgroupref_tle(sgc->tleSortGroupRef, q->targetList);

        require_immutable((Node *) tle->expr, "GROUP BY");
        nkeys++;
        appendStringInfo(&keys_sel, "%s%s AS k%d", nkeys > 1 ? ", " : "",
                         deparse_expression((Node *) tle->expr, ctx, true, false), nkeys);
        appendStringInfo(&cols, "%sk%d", nkeys > 1 ? ", " : "", nkeys);
        appendStringInfo(&groupby, "%s%d", nkeys > 1 ? ", " : " GROUP BY ", nkeys);
    }
    if (nkeys == 0)
    {
        appendStringInfoString(&keys_sel, "true AS k1");
        appendStringInfoString(&cols, "k1");
        appendStringInfoString(&init_cols, "k1, n");
        appendStringInfoString(&init_vals, "true, 0");
    }
    appendStringInfo(&upd, "n = t.n + excluded.n");

    /* the selected columns: keys or aggregates */
    foreach(lc, q->targetList)
    {
        TargetEntry *tle = lfirst_node(TargetEntry, lc);
        const char *colname = quote_identifier(tle->resname ? tle->resname : "?column?");

        if (tle->resjunk)
            continue;
        if (tle->ressortgroupref != 0 &&
            get_sortgroupref_clause_noerr(tle->ressortgroupref, q->groupClause) != NULL)
        {
            int         k = 0;
            ListCell   *g;

            foreach(g, q->groupClause)
            {
                k++;
                if (lfirst_node(SortGroupClause, g)->tleSortGroupRef == tle->ressortgroupref)
                    break;
            }
            appendStringInfo(&user_cols, "%sk%d AS %s", user_cols.len ? ", " : "", k, colname);
            continue;
        }
        if (IsA(tle->expr, Aggref))
        {
            Aggref     *a = (Aggref *) tle->expr;
            AggKind     kind = agg_kind(a);
            char       *arg = NULL;
            char       *result_type = format_type_with_typemod(a->aggtype, -1);

            if (a->aggkind != AGGKIND_NORMAL)
                refuse("an ordered-set aggregate", NULL);
            if (a->aggdistinct != NIL)
                refuse("DISTINCT in an aggregate", NULL);
            if (a->aggorder != NIL)
                refuse("ORDER BY in an aggregate", NULL);
            if (a->aggfilter != NULL)
                refuse("FILTER in an aggregate", "Filter in WHERE, or make one view per filter.");
            if (list_length(a->args) > 1)
                refuse("an aggregate of several arguments", NULL);
            if (a->args != NIL)
            {
                Node       *e = (Node *) linitial_node(TargetEntry, a->args)->expr;

                require_immutable(e, "an aggregate's argument");
                arg = deparse_expression(e, ctx, true, false);
            }
            nagg++;
            switch (kind)
            {
                case AGG_COUNT:
                    appendStringInfo(&part_sel, ", count(%s) AS a%d", arg ? arg : "*", nagg);
                    appendStringInfo(&part_cols, ", a%d", nagg);
                    appendStringInfo(&upd, ", a%d = t.a%d + excluded.a%d", nagg, nagg, nagg);
                    appendStringInfo(&user_cols, "%sa%d AS %s", user_cols.len ? ", " : "", nagg, colname);
                    appendStringInfo(&init_cols, ", a%d", nagg);
                    appendStringInfoString(&init_vals, ", 0");
                    break;
                case AGG_SUM:
                    appendStringInfo(&part_sel, ", sum(%s) AS a%d", arg, nagg);
                    appendStringInfo(&part_cols, ", a%d", nagg);
                    appendStringInfo(&upd, ", a%d = coalesce(t.a%d + excluded.a%d, t.a%d, excluded.a%d)",
                                     nagg, nagg, nagg, nagg, nagg);
                    appendStringInfo(&user_cols, "%sa%d AS %s", user_cols.len ? ", " : "", nagg, colname);
                    break;
                case AGG_AVG:
                    appendStringInfo(&part_sel, ", sum(%s) AS a%d, count(%s) AS a%d_c", arg, nagg, arg, nagg);
                    appendStringInfo(&part_cols, ", a%d, a%d_c", nagg, nagg);
                    appendStringInfo(&upd, ", a%d = coalesce(t.a%d + excluded.a%d, t.a%d, excluded.a%d),"
                                     " a%d_c = t.a%d_c + excluded.a%d_c",
                                     nagg, nagg, nagg, nagg, nagg, nagg, nagg, nagg);
                    appendStringInfo(&user_cols, "%s(a%d::%s / nullif(a%d_c, 0))::%s AS %s",
                                     user_cols.len ? ", " : "", nagg, result_type, nagg, result_type,
                                     colname);
                    appendStringInfo(&init_cols, ", a%d_c", nagg);
                    appendStringInfoString(&init_vals, ", 0");
                    break;
                case AGG_MIN:
                case AGG_MAX:
                    appendStringInfo(&part_sel, ", %s(%s) AS a%d", kind == AGG_MIN ? "min" : "max", arg, nagg);
                    appendStringInfo(&part_cols, ", a%d", nagg);
                    appendStringInfo(&upd, ", a%d = %s(t.a%d, excluded.a%d)", nagg,
                                     kind == AGG_MIN ? "least" : "greatest", nagg, nagg);
                    appendStringInfo(&user_cols, "%sa%d AS %s", user_cols.len ? ", " : "", nagg, colname);
                    break;
            }
            continue;
        }
        if (contain_agg_clause((Node *) tle->expr))
            ereport(ERROR,
                    (errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
                     errmsg("an expression over aggregates (column %s) cannot be maintained incrementally",
                            colname),
                     errhint("Select the aggregates themselves and compute over them when you read the view.")));
        ereport(ERROR,
                (errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
                 errmsg("column %s is neither a GROUP BY key nor an aggregate and cannot be maintained incrementally",
                        colname)));
    }
    if (user_cols.len == 0)
        refuse("a query that selects no column", NULL);

    delta = psprintf("INSERT INTO %s AS t (%s, n%s) SELECT %s, count(*) AS n%s"
                     " FROM svcbus.event_log e WHERE e.\"position\" > $1 AND e.\"position\" < $2%s%s%s"
                     "%s HAVING count(*) > 0 ON CONFLICT (%s) DO UPDATE SET %s",
                     state, cols.data, part_cols.data, keys_sel.data, part_sel.data,
                     q->jointree->quals ? " AND (" : "",
                     q->jointree->quals ? deparse_expression(q->jointree->quals, ctx, true, false) : "",
                     q->jointree->quals ? ")" : "",
                     groupby.data, cols.data, upd.data);
    svcbus_leave_owner(&as);
    if (nkeys == 0)
        init = psprintf("INSERT INTO %s (%s) VALUES (%s)", state, init_cols.data, init_vals.data);

    /*
     * The state's columns: the types of the delta's select list, planned as
     * the caller (search_path pinned).  The user's expressions are never
     * planned or run as the extension owner, who makes the table: planning
     * folds immutable calls with constant arguments, and an "immutable"
     * function can still read what its owner may not.
     */
    initStringInfo(&coldefs);
    svcbus_enter_role(GetUserId(), &as);
    SPI_connect();
    if (SPI_execute(psprintf("SELECT %s, count(*) AS n%s FROM svcbus.event_log e WHERE false%s",
                             keys_sel.data, part_sel.data, groupby.data),
                    true, 0) != SPI_OK_SELECT || SPI_tuptable == NULL)
        elog(ERROR, "svcbus: planning a view's state failed");
    for (int i = 0; i < SPI_tuptable->tupdesc->natts; i++)
    {
        Form_pg_attribute att = TupleDescAttr(SPI_tuptable->tupdesc, i);

        appendStringInfo(&coldefs, "%s%s %s", i > 0 ? ", " : "", quote_identifier(NameStr(att->attname)),
                         format_type_with_typemod(att->atttypid, att->atttypmod));
        if (OidIsValid(att->attcollation) && att->attcollation != get_typcollation(att->atttypid))
            appendStringInfo(&coldefs, " COLLATE %s", generate_collation_name(att->attcollation));
    }
    SPI_finish();
    svcbus_leave_owner(&as);

    /* the state table: made by the extension owner, then handed to the caller */
    svcbus_enter_owner(&as);
    SPI_connect();
    if (SPI_execute(psprintf("CREATE TABLE %s (%s)", state, coldefs.data), false, 0) != SPI_OK_UTILITY)
        elog(ERROR, "svcbus: creating a view's state failed");
    if (SPI_execute(psprintf("CREATE UNIQUE INDEX ON %s (%s) NULLS NOT DISTINCT", state, cols.data),
                    false, 0) != SPI_OK_UTILITY ||
        SPI_execute(psprintf("ALTER TABLE %s OWNER TO %s", state,
                             quote_identifier(GetUserNameFromId(as.save_userid, false))),
                    false, 0) != SPI_OK_UTILITY)
        elog(ERROR, "svcbus: creating a view's state failed");
    SPI_finish();
    svcbus_leave_owner(&as);

    /* the view, as the caller: its schema's CREATE right applies */
    SPI_connect();
    if (init != NULL && SPI_execute(init, false, 0) != SPI_OK_INSERT)
        elog(ERROR, "svcbus: initialising a view's state failed");
    if (SPI_execute(psprintf("CREATE VIEW %s AS SELECT %s FROM %s", rel, user_cols.data, state),
                    false, 0) != SPI_OK_UTILITY)
        elog(ERROR, "svcbus: creating a view failed");
    SPI_finish();

    def->rel_oid = RangeVarGetRelid(makeRangeVarFromNameList(relname), NoLock, false);
    def->state_oid = get_relname_relid(name, get_namespace_oid("svcbus_view_state", false));
    def->delta = delta;
    def->init = init;
    def->state = state;
    def->rel = rel;
}
