/*
 * extension/svcbus.c
 *      Module entry point: _PG_init and svcbus.version().
 *
 * _PG_init only delegates: GUCs (guc.c), shared-memory hooks (shmem.c) and
 * the launcher worker (bgworkers/launcher.c).  When the library is loaded
 * without shared_preload_libraries (for example by CREATE EXTENSION), only
 * the GUCs are defined; every function that needs shared state then raises
 * SQLSTATE 55000 through svcbus_shmem_require().
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "utils/builtins.h"

#include "extension/svcbus.h"

PG_MODULE_MAGIC;

void        _PG_init(void);

void
_PG_init(void)
{
    svcbus_guc_define();

    if (!process_shared_preload_libraries_in_progress)
        return;

    svcbus_shmem_install_hooks();
    svcbus_launcher_register();
}

PG_FUNCTION_INFO_V1(svcbus_version);

/*
 * svcbus.version() -> text: the version of the loaded svcbus library.
 * Works with or without shared_preload_libraries.
 */
Datum
svcbus_version(PG_FUNCTION_ARGS)
{
    PG_RETURN_TEXT_P(cstring_to_text(SVCBUS_VERSION));
}

/*
 * Argument n as a C string; SQLSTATE 22004 "<what> must not be null" when
 * it is NULL (the SQL functions are not STRICT, so NULLs get an error).
 */
char *
svcbus_text_arg(FunctionCallInfo fcinfo, int n, const char *what)
{
    if (PG_ARGISNULL(n))
        ereport(ERROR,
                (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
                 errmsg("%s must not be null", what)));
    return text_to_cstring(PG_GETARG_TEXT_PP(n));
}
