# svcbus: root Makefile.
#
# PGXS builds and installs the extension (svcbus.so + sql/ scripts); the
# gateway daemon has its own Makefile under adapters/.  The two README
# commands are `make run` and `make test`; both begin with `make deps`,
# which installs every Debian package they need, so they work on a fresh
# Debian 12 machine as root.

EXTENSION   = svcbus
MODULE_big  = svcbus
OBJS = \
	extension/svcbus.o \
	extension/guc.o \
	extension/shmem.o \
	extension/workers_view.o \
	bgworkers/registry.o \
	bgworkers/worker.o \
	bgworkers/launcher.o \
	bgworkers/queue_worker.o \
	bgworkers/lock_worker.o \
	bgworkers/cache_worker.o \
	bgworkers/paxos_worker.o \
	bgworkers/projector_worker.o \
	extension/queue_api.o \
	extension/topic_api.o \
	extension/lock_api.o \
	extension/cache_api.o \
	extension/cluster_acceptor.o \
	extension/cluster_api.o \
	extension/cluster_lock_api.o \
	extension/event_api.o \
	extension/projection_api.o \
	bus/lock_sm.o \
	bus/lock_shmem.o \
	bus/topic_match.o \
	bus/backoff.o \
	bus/horizon.o \
	bus/queue_shmem.o \
	bus/queue_state.o \
	bus/queue_xact.o \
	bus/queue_store.o \
	bus/queue_catalog.o \
	bus/queue_ops.o \
	bus/cache_sm.o \
	bus/cache_shmem.o \
	bus/cache_xact.o \
	bus/cluster_sm.o \
	bus/cluster_snapshot.o \
	bus/cluster_lock_sm.o \
	bus/cluster_shmem.o \
	bus/registry_sm.o \
	bus/registry_sm_cmd.o \
	bus/registry_sm_read.o \
	bus/event_shmem.o \
	bus/event_store.o \
	bus/projection.o \
	bus/event_view.o \
	bus/event_fold.o

DATA = sql/svcbus--0.1.sql
PGFILEDESC = "svcbus - service bus inside PostgreSQL"

# pg_regress: tests in test/sql, expected output in test/expected, run on a
# temporary instance that preloads svcbus (see test/svcbus.conf).
REGRESS        = version workers queue_basic queue_errors queue_dead_letters queue_permissions queue_groups queue_topics locks cache cluster events projections event_views
REGRESS_OUTDIR ?= test/results-regress
REGRESS_OPTS   = --inputdir=test --outputdir=$(REGRESS_OUTDIR) \
                 --temp-instance=$(REGRESS_OUTDIR)/tmp_check \
                 --temp-config=test/svcbus.conf --load-extension=svcbus
# Isolation tests (two sessions): test/specs, expected output in test/expected.
ISOLATION      = event_concurrency
ISOLATION_OPTS = --inputdir=test --outputdir=$(REGRESS_OUTDIR)-isolation \
                 --temp-instance=$(REGRESS_OUTDIR)-isolation/tmp_check \
                 --temp-config=test/isolation.conf --load-extension=svcbus
NOPRELOAD_TESTS = nopreload

PG_CPPFLAGS = -I$(CURDIR) -I. -Wall -Wextra -Wno-unused-parameter \
              -Wno-missing-field-initializers -Wno-sign-compare -Werror
# The paxos worker talks to its peers with libpq (as dblink does).
PG_CPPFLAGS += -I$(libpq_srcdir)
SHLIB_LINK_INTERNAL = $(libpq)

ifeq ($(SVCBUS_ASSERTS),1)
PG_CPPFLAGS += -DUSE_ASSERT_CHECKING
endif

# PGXS tracks no header dependencies: every object depends on every header.
# (This rule comes before PGXS's, so name the default goal explicitly.)
.DEFAULT_GOAL := all
HEADERS = $(wildcard extension/*.h bus/*.h bgworkers/*.h)
$(OBJS): $(HEADERS)

PG_CONFIG ?= pg_config
PGXS := $(shell command -v $(PG_CONFIG) >/dev/null 2>&1 && $(PG_CONFIG) --pgxs)
ifneq ($(PGXS),)
include $(PGXS)
else
all install installcheck:
	@echo "pg_config not found: run 'make deps' first (or 'make run' / 'make test')" >&2; exit 1
endif

# ---------------------------------------------------------------------------
# Debian packages every command needs (installed by `make deps`, as root).
DEB_PACKAGES = build-essential pkg-config postgresql-15 postgresql-server-dev-15 \
	libpq-dev libwebsockets-dev libxml2-dev libcmocka-dev libjansson-dev libssl-dev \
	postgresql-15-pgtap libtap-parser-sourcehandler-pgtap-perl \
	python3 python3-psycopg python3-websockets python3-pytest python3-zeep curl procps \
	clang libclang-rt-14-dev chromium openssl \
	iproute2 nftables faketime spin
BENCH_PACKAGES = postgresql-15-pgq3 pgqd redis-server memcached etcd-server etcd-client

.PHONY: deps bench-deps gateway gateway-install run stop test unit \
	installcheck-nopreload bench clean-test test-cluster

deps:
	@missing=$$(for p in $(DEB_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; \
	done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:" $$missing; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

bench-deps: deps
	@missing=$$(for p in $(BENCH_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; \
	done); \
	if [ -n "$$missing" ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

all: gateway

gateway:
	$(MAKE) -C adapters

install: gateway-install

gateway-install: gateway
	$(MAKE) -C adapters install

unit:
	$(MAKE) -C test/unit run
	$(MAKE) -C adapters unit

# The temporary instance without shared_preload_libraries.
installcheck-nopreload:
	$(pg_regress_installcheck) --inputdir=test --outputdir=$(REGRESS_OUTDIR)-nopreload \
		--temp-instance=$(REGRESS_OUTDIR)-nopreload/tmp_check \
		--temp-config=test/nopreload.conf $(NOPRELOAD_TESTS)

run: deps
	$(MAKE) all
	$(MAKE) install
	test/harness/devcluster.sh start

stop:
	test/harness/devcluster.sh stop

test: deps
	$(MAKE) clean
	$(MAKE) all SVCBUS_ASSERTS=1
	$(MAKE) install SVCBUS_ASSERTS=1
	/usr/bin/python3 test/run_all.py

# The long form of the cluster tests: minutes of mixed faults on 3 and 5 nodes.
test-cluster: deps
	$(MAKE) all SVCBUS_ASSERTS=1
	$(MAKE) install SVCBUS_ASSERTS=1
	/usr/bin/python3 test/cluster/run_cluster.py --long

bench: bench-deps
	$(MAKE) clean
	$(MAKE) all
	$(MAKE) install
	test/bench/run_all.sh

clean-test:
	rm -rf test/results-regress test/results-regress-nopreload
	-$(MAKE) -C adapters clean
	-$(MAKE) -C test/unit clean

clean: clean-test
