/*
 * version.h - the gateway's version string (matches the extension's
 * default_version in svcbus.control). Nothing else lives here.
 */
#ifndef SVCBUS_GW_VERSION_H
#define SVCBUS_GW_VERSION_H

#define GW_VERSION "0.1"
#define GW_PROGRAM "svcbus-gateway"

#endif
