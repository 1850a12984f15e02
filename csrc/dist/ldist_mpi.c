/* ldist_mpi.c - faceid.dist_mpi: the MPI half of faceid.dist (data-parallel
 * training). Built apart from faceid.core, with mpicc, only where MPI is
 * installed (mk/dist.mk); lua/faceid/dist.lua wraps it and says so when it
 * is absent. Collectives work in place on contiguous float32 Tensors; a
 * guard aborts the whole job when a process ends without finalize(), so an
 * error on one rank never leaves the others waiting in a collective.
 */
#define _GNU_SOURCE /* dladdr: the path of the loaded libmpi */
#include "../lfaceid.h"

#include <dlfcn.h>
#include <limits.h>
#include <lauxlib.h>
#include <mpi.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* MPI itself is one per process, so the little state that shadows it is
   too: whether this module started it, and the signal flag (a handler can
   reach nothing else). */
static int started;                  /* init() ran MPI_Init here */
static volatile sig_atomic_t signalled; /* a stop signal while caught */
static int catching;
static struct sigaction old_int, old_term, old_usr1;

#define GUARD "faceid.dist_mpi.guard"

static int is_live(void)
{
    int init = 0, fin = 0;
    MPI_Initialized(&init);
    MPI_Finalized(&fin);
    return init && !fin;
}

static int world_rank(void)
{
    int r = -1;
    if (is_live()) MPI_Comm_rank(MPI_COMM_WORLD, &r);
    return r;
}

/* a process that ends with MPI still running has failed somewhere (an
   uncaught error, os.exit): stop every rank now rather than let the others
   wait for it in a collective forever */
static void abort_job(const char *why)
{
    if (!started || !is_live()) return;
    fprintf(stderr, "faceid.dist: rank %d %s; aborting all ranks\n", world_rank(), why);
    fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, 1);
}

static void at_exit(void)
{
    abort_job("exited without faceid.dist.finalize()");
}

static int guard_gc(lua_State *L)
{
    (void)L;
    abort_job("ended without faceid.dist.finalize() (an uncaught error?)");
    return 0;
}

static void check_live(lua_State *L, const char *fname)
{
    int fin = 0;
    MPI_Finalized(&fin);
    if (fin) luaL_error(L, "faceid.dist.%s: MPI has been finalized", fname);
    if (!is_live()) luaL_error(L, "faceid.dist.%s: call faceid.dist.init() first", fname);
}

static int mpi_fail(lua_State *L, const char *fname, int rc)
{
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(rc, msg, &len) != MPI_SUCCESS) snprintf(msg, sizeof msg, "error %d", rc);
    return luaL_error(L, "faceid.dist.%s: MPI: %s", fname, msg);
}

/* Open MPI loads its transports as plugins that expect libmpi's symbols
   to be global; Lua opens C modules with RTLD_LOCAL, so libmpi is
   promoted (it is already loaded: RTLD_NOLOAD) before MPI_Init */
static void promote_libmpi(void)
{
    Dl_info info;
    if (dladdr((void *)&MPI_Init, &info) && info.dli_fname)
        dlopen(info.dli_fname, RTLD_NOW | RTLD_GLOBAL | RTLD_NOLOAD);
}

/* init() -> rank, size; idempotent */
static int l_init(lua_State *L)
{
    int init = 0, fin = 0, provided = 0, rank = 0, size = 1;
    MPI_Finalized(&fin);
    if (fin) return luaL_error(L, "faceid.dist.init: MPI has been finalized and cannot start again");
    MPI_Initialized(&init);
    if (!init) {
        promote_libmpi();
        int rc = MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided);
        if (rc != MPI_SUCCESS) return mpi_fail(L, "init", rc);
        started = 1;
        MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
        atexit(at_exit);
    }
    /* closing the Lua state with MPI still running (an uncaught error
       ends lua5.4 that way) aborts the job: the guard's __gc */
    if (started) {
        if (lua_getfield(L, LUA_REGISTRYINDEX, GUARD) == LUA_TNIL) {
            lua_newuserdatauv(L, 1, 0);
            lua_createtable(L, 0, 1);
            lua_pushcfunction(L, guard_gc);
            lua_setfield(L, -2, "__gc");
            lua_setmetatable(L, -2);
            lua_setfield(L, LUA_REGISTRYINDEX, GUARD);
        }
        lua_pop(L, 1);
    }
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    lua_pushinteger(L, rank);
    lua_pushinteger(L, size);
    return 2;
}

static int l_initialized(lua_State *L)
{
    lua_pushboolean(L, is_live());
    return 1;
}

static int l_rank(lua_State *L)
{
    int r;
    check_live(L, "rank");
    MPI_Comm_rank(MPI_COMM_WORLD, &r);
    lua_pushinteger(L, r);
    return 1;
}

static int l_size(lua_State *L)
{
    int s;
    check_live(L, "size");
    MPI_Comm_size(MPI_COMM_WORLD, &s);
    lua_pushinteger(L, s);
    return 1;
}

static int l_barrier(lua_State *L)
{
    check_live(L, "barrier");
    int rc = MPI_Barrier(MPI_COMM_WORLD);
    if (rc != MPI_SUCCESS) return mpi_fail(L, "barrier", rc);
    return 0;
}

/* finalize(): idempotent; a no-op when MPI never started */
static int l_finalize(lua_State *L)
{
    if (is_live()) {
        int rc = MPI_Finalize();
        if (rc != MPI_SUCCESS) return mpi_fail(L, "finalize", rc);
    }
    return 0;
}

/* abort([message [, code]]): message on stderr, then every rank stops */
static int l_abort(lua_State *L)
{
    const char *msg = luaL_optstring(L, 1, NULL);
    lua_Integer code = luaL_optinteger(L, 2, 1);
    if (msg) fprintf(stderr, "faceid.dist: rank %d: %s\n", world_rank(), msg);
    fflush(stdout);
    fflush(stderr);
    if (is_live()) MPI_Abort(MPI_COMM_WORLD, (int)code);
    exit((int)code); /* MPI not running: this process is the whole job */
}

static int l_wtime(lua_State *L)
{
    lua_pushnumber(L, MPI_Wtime());
    return 1;
}

static int l_library(lua_State *L)
{
    char v[MPI_MAX_LIBRARY_VERSION_STRING];
    int len = 0;
    MPI_Get_library_version(v, &len);
    lua_pushlstring(L, v, (size_t)len > 0 ? strcspn(v, "\n,") : 0);
    return 1;
}

static int l_processor_name(lua_State *L)
{
    char name[MPI_MAX_PROCESSOR_NAME];
    int len = 0;
    check_live(L, "processor_name");
    MPI_Get_processor_name(name, &len);
    lua_pushlstring(L, name, (size_t)len);
    return 1;
}

/* ---- tensors ---------------------------------------------------------- */

/* the data and element count of a contiguous, open Tensor at idx (the
   layout of lfaceid.h; faceid.core's functions are not linked in here) */
static float *check_tensor(lua_State *L, const char *fname, int idx, size_t *n)
{
    ltensor *u = luaL_testudata(L, idx, LFID_TENSOR);
    if (!u) luaL_error(L, "faceid.dist.%s: expected a faceid.Tensor, got %s", fname, luaL_typename(L, idx));
    if (!u->st || !u->st->data) luaL_error(L, "faceid.dist.%s: the tensor has been closed", fname);
    const fid_tensor *t = &u->t;
    size_t numel = 1;
    ptrdiff_t want = 1;
    for (int d = t->ndim - 1; d >= 0; d--) {
        if (t->size[d] != 1 && t->stride[d] != want)
            luaL_error(L, "faceid.dist.%s: the tensor must be contiguous (use :contiguous())", fname);
        want *= (ptrdiff_t)t->size[d];
        numel *= t->size[d];
    }
    *n = numel;
    return t->data;
}

/* every rank must pass the same element count and operation, or MPI would
   read past the smaller buffers: checked with one tiny collective */
static void check_agree(lua_State *L, const char *fname, size_t n, int what)
{
    long long v[4] = { (long long)n, -(long long)n, what, -what };
    int rc = MPI_Allreduce(MPI_IN_PLACE, v, 4, MPI_LONG_LONG, MPI_MAX, MPI_COMM_WORLD);
    if (rc != MPI_SUCCESS) mpi_fail(L, fname, rc);
    if (v[0] != -v[1])
        luaL_error(L, "faceid.dist.%s: ranks passed tensors of different sizes (%I to %I elements)", fname,
                   (lua_Integer)-v[1], (lua_Integer)v[0]);
    if (v[2] != -v[3]) luaL_error(L, "faceid.dist.%s: ranks asked for different operations", fname);
}

/* MPI counts are ints: large blocks go in pieces */
#define CHUNK ((size_t)1 << 30)

static const char *const op_names[] = { "sum", "mean", "max", "min", NULL };

/* allreduce(tensor, op [, scale]): in place; op "sum" | "mean" | "max" |
   "min"; with scale, each rank's tensor is multiplied by its own scale
   first (a weighted sum). Returns the tensor. */
static int l_allreduce(lua_State *L)
{
    size_t n;
    float *x = check_tensor(L, "allreduce", 1, &n);
    int op = luaL_checkoption(L, 2, NULL, op_names);
    int scaled = !lua_isnoneornil(L, 3);
    float scale = scaled ? (float)luaL_checknumber(L, 3) : 1.0f;
    check_live(L, "allreduce");
    check_agree(L, "allreduce", n, op);
    if (scaled)
        for (size_t i = 0; i < n; i++) x[i] *= scale;
    MPI_Op mop = op == 2 ? MPI_MAX : op == 3 ? MPI_MIN : MPI_SUM;
    for (size_t at = 0; at < n; at += CHUNK) {
        int cnt = (int)(n - at < CHUNK ? n - at : CHUNK);
        int rc = MPI_Allreduce(MPI_IN_PLACE, x + at, cnt, MPI_FLOAT, mop, MPI_COMM_WORLD);
        if (rc != MPI_SUCCESS) return mpi_fail(L, "allreduce", rc);
    }
    int size;
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (op == 1 && size > 1) {
        float inv = 1.0f / (float)size;
        for (size_t i = 0; i < n; i++) x[i] *= inv;
    }
    lua_settop(L, 1);
    return 1;
}

static int check_root(lua_State *L, const char *fname, int idx)
{
    lua_Integer root = luaL_optinteger(L, idx, 0);
    int size;
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (root < 0 || root >= size)
        luaL_error(L, "faceid.dist.%s: root must be a rank in 0..%d, got %I", fname, size - 1, root);
    return (int)root;
}

/* broadcast(tensor [, root = 0]): root's values into every rank's tensor */
static int l_broadcast(lua_State *L)
{
    size_t n;
    float *x = check_tensor(L, "broadcast", 1, &n);
    check_live(L, "broadcast");
    int root = check_root(L, "broadcast", 2);
    check_agree(L, "broadcast", n, root);
    for (size_t at = 0; at < n; at += CHUNK) {
        int cnt = (int)(n - at < CHUNK ? n - at : CHUNK);
        int rc = MPI_Bcast(x + at, cnt, MPI_FLOAT, root, MPI_COMM_WORLD);
        if (rc != MPI_SUCCESS) return mpi_fail(L, "broadcast", rc);
    }
    lua_settop(L, 1);
    return 1;
}

/* allgather_string(s) -> { s of rank 0, s of rank 1, ... } (short strings:
   generator states, host names) */
static int l_allgather_string(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    check_live(L, "allgather_string");
    if (len > (size_t)INT_MAX / 1024) luaL_error(L, "faceid.dist.allgather_string: string too long");
    int size, rc;
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    int *lens = lua_newuserdatauv(L, 2 * (size_t)size * sizeof(int), 0);
    int *offs = lens + size;
    int mine = (int)len;
    rc = MPI_Allgather(&mine, 1, MPI_INT, lens, 1, MPI_INT, MPI_COMM_WORLD);
    if (rc != MPI_SUCCESS) return mpi_fail(L, "allgather_string", rc);
    size_t total = 0;
    for (int r = 0; r < size; r++) {
        if (total > (size_t)INT_MAX - (size_t)lens[r])
            luaL_error(L, "faceid.dist.allgather_string: strings too long together");
        offs[r] = (int)total;
        total += (size_t)lens[r];
    }
    char *all = lua_newuserdatauv(L, total ? total : 1, 0);
    rc = MPI_Allgatherv(s, mine, MPI_CHAR, all, lens, offs, MPI_CHAR, MPI_COMM_WORLD);
    if (rc != MPI_SUCCESS) return mpi_fail(L, "allgather_string", rc);
    lua_createtable(L, size, 0);
    for (int r = 0; r < size; r++) {
        lua_pushlstring(L, all + offs[r], (size_t)lens[r]);
        lua_rawseti(L, -2, r + 1);
    }
    return 1;
}

/* ---- signals ------------------------------------------------------------- */

/* the first SIGINT/SIGTERM/SIGUSR1 only raises a flag that the training
   loop shares with the other ranks at the end of its step (so all stop at
   the same step and rank 0 saves); another one more than 2 s later ends
   the process as usual (mpirun may deliver one signal twice: to the rank
   and to its process group). mpirun turns its own SIGINT into SIGTERM for
   every rank, followed by SIGKILL after odls_base_sigkill_timeout seconds;
   SIGUSR1 it forwards as is, with no SIGKILL after it. */
static struct timespec first_signal;

static void on_signal(int sig)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now); /* async-signal-safe */
    if (!signalled) {
        first_signal = now;
        signalled = 1;
    } else if (now.tv_sec - first_signal.tv_sec > 2) {
        signal(sig, SIG_DFL);
        raise(sig);
    }
}

static int l_catch_signals(lua_State *L)
{
    (void)L;
    if (!catching) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_signal;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGINT, &sa, &old_int);
        sigaction(SIGTERM, &sa, &old_term);
        sigaction(SIGUSR1, &sa, &old_usr1);
        catching = 1;
    }
    signalled = 0;
    return 0;
}

static int l_release_signals(lua_State *L)
{
    (void)L;
    if (catching) {
        sigaction(SIGINT, &old_int, NULL);
        sigaction(SIGTERM, &old_term, NULL);
        sigaction(SIGUSR1, &old_usr1, NULL);
        catching = 0;
    }
    return 0;
}

static int l_signalled(lua_State *L)
{
    lua_pushboolean(L, signalled != 0);
    return 1;
}

static const luaL_Reg functions[] = {
    {"init", l_init}, {"initialized", l_initialized}, {"rank", l_rank}, {"size", l_size},
    {"barrier", l_barrier}, {"finalize", l_finalize}, {"abort", l_abort}, {"wtime", l_wtime},
    {"library", l_library}, {"processor_name", l_processor_name}, {"allreduce", l_allreduce},
    {"broadcast", l_broadcast}, {"allgather_string", l_allgather_string},
    {"catch_signals", l_catch_signals}, {"release_signals", l_release_signals},
    {"signalled", l_signalled}, {NULL, NULL}};

int luaopen_faceid_dist_mpi(lua_State *L);
int luaopen_faceid_dist_mpi(lua_State *L)
{
    luaL_newlib(L, functions);
    return 1;
}
