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
