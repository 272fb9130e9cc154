/* runtime.c — libascendcl.so of the CANN emulator: init, devices, streams, device memory
 * and copies (acl_rt.h subset, CANN 8.1.RC1).
 *
 * Device memory is one shared-memory file mapped twice: the addresses handed out by
 * aclrtMalloc lie in a PROT_NONE mapping, so a host read of a device pointer always
 * faults, as it would on an NPU; the emulator itself reaches the same pages through a
 * second, read-write alias mapping (emu_alias). Work enqueued on a stream (async
 * copies, aclnn phase 2, HCCL collectives) runs only at aclrtSynchronizeStream, so a
 * missing synchronize yields stale data, not lucky data. */

#include "emu.h"
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

static __thread char t_err[1024];
static __thread int t_device = -1;

EMU_API void emu_set_err(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(t_err, sizeof t_err, fmt, ap);
  va_end(ap);
}

EMU_API const char *aclGetRecentErrMsg(void) { return t_err[0] ? t_err : NULL; }

/* ---------------- process state ---------------- */
typedef struct {
  size_t off, size, req; /* size: rounded block size; req: bytes the caller asked for */
  int used, device;
} block_t;

static struct {
  pthread_mutex_t mu; /* guards everything below */
  int inited;
  int ndev;
  char *arena; /* device addresses: PROT_NONE */
  char *alias; /* the same pages, read-write, for the emulator */
  int fd;
  size_t arena_size, top;
  block_t *blocks;
  size_t nblocks, capblocks;
} g = {.mu = PTHREAD_MUTEX_INITIALIZER};

EMU_API int emu_initialized(void) { return g.inited; }

static size_t env_size(const char *name, size_t def) {
  const char *v = getenv(name);
  if (!v || !*v) return def;
  char *end;
  unsigned long long x = strtoull(v, &end, 10);
  if (*end == 'G' || *end == 'g') x <<= 30;
  else if (*end == 'M' || *end == 'm') x <<= 20;
  return x ? (size_t)x : def;
}

EMU_API aclError aclInit(const char *configPath) {
  (void)configPath;
  pthread_mutex_lock(&g.mu);
  if (g.inited) {
    pthread_mutex_unlock(&g.mu);
    emu_set_err("aclInit: repeated initialization");
    return ACL_ERROR_REPEAT_INITIALIZE;
  }
  if (!g.arena) {
    g.arena_size = env_size("DSGATE_EMU_DEVICE_BYTES", (size_t)64 << 30);
    int fd = memfd_create("dsgate-emu-device", MFD_CLOEXEC);
    void *p = MAP_FAILED, *q = MAP_FAILED;
    if (fd >= 0 && ftruncate(fd, (off_t)g.arena_size) == 0) {
      p = mmap(NULL, g.arena_size, PROT_NONE, MAP_SHARED | MAP_NORESERVE, fd, 0);
      q = mmap(NULL, g.arena_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd, 0);
    }
    if (p == MAP_FAILED || q == MAP_FAILED) {
      int e = errno;
      if (p != MAP_FAILED) munmap(p, g.arena_size);
      if (q != MAP_FAILED) munmap(q, g.arena_size);
      if (fd >= 0) close(fd);
      pthread_mutex_unlock(&g.mu);
      emu_set_err("aclInit: cannot map %zu bytes of emulated device memory: %s", g.arena_size, strerror(e));
      return ACL_ERROR_BAD_ALLOC;
    }
    g.arena = p;
    g.alias = q;
    g.fd = fd;
  }
  g.ndev = (int)env_size("DSGATE_EMU_DEVICE_COUNT", 8);
  g.inited = 1;
  pthread_mutex_unlock(&g.mu);
  return ACL_SUCCESS;
}

EMU_API aclError aclFinalize(void) {
  pthread_mutex_lock(&g.mu);
  if (!g.inited) {
    pthread_mutex_unlock(&g.mu);
    emu_set_err("aclFinalize: not initialized");
    return ACL_ERROR_UNINITIALIZE;
  }
  g.inited = 0; /* the arena stays reserved; a later aclInit reuses it */
  pthread_mutex_unlock(&g.mu);
  return ACL_SUCCESS;
}

#define NEED_INIT(fn)                                    \
  do {                                                   \
    if (!g.inited) {                                     \
      emu_set_err("%s: aclInit has not been called", fn); \
      return ACL_ERROR_UNINITIALIZE;                     \
    }                                                    \
  } while (0)

EMU_API aclError aclrtGetDeviceCount(uint32_t *count) {
  NEED_INIT("aclrtGetDeviceCount");
  if (!count) return ACL_ERROR_INVALID_PARAM;
  *count = (uint32_t)g.ndev;
  return ACL_SUCCESS;
}

EMU_API aclError aclrtSetDevice(int32_t id) {
  NEED_INIT("aclrtSetDevice");
  if (id < 0 || id >= g.ndev) {
    emu_set_err("aclrtSetDevice: device %d does not exist (emulated device count %d)", id, g.ndev);
    return ACL_ERROR_INVALID_DEVICE;
  }
  t_device = id;
  return ACL_SUCCESS;
}

EMU_API aclError aclrtResetDevice(int32_t id) {
  NEED_INIT("aclrtResetDevice");
  if (id < 0 || id >= g.ndev) return ACL_ERROR_INVALID_DEVICE;
  if (t_device == id) t_device = -1;
  return ACL_SUCCESS;
}

EMU_API int emu_current_device(void) { return t_device; }

/* ---------------- device access ---------------- */
EMU_API void *emu_alias(const void *p) {
  const char *c = p;
  if (g.arena && c >= g.arena && c < g.arena + g.arena_size) return g.alias + (c - g.arena);
  return (void *)p;
}


/* ---------------- device memory ---------------- */
static size_t find_block(size_t off) { /* index of the block containing off, or nblocks */
  size_t lo = 0, hi = g.nblocks;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (g.blocks[mid].off + g.blocks[mid].size <= off) lo = mid + 1;
    else hi = mid;
  }
  if (lo < g.nblocks && g.blocks[lo].off <= off) return lo;
  return g.nblocks;
}

EMU_API int emu_dev_block(const void *p, size_t *avail) {
  const char *c = p;
  if (!g.arena || c < g.arena || c >= g.arena + g.arena_size) return -1;
  pthread_mutex_lock(&g.mu);
  size_t off = (size_t)(c - g.arena);
  size_t i = find_block(off);
  int dev = -1;
  if (i < g.nblocks && g.blocks[i].used && off < g.blocks[i].off + g.blocks[i].req) {
    dev = g.blocks[i].device;
    if (avail) *avail = g.blocks[i].off + g.blocks[i].req - off;
  }
  pthread_mutex_unlock(&g.mu);
  return dev;
}

static int insert_block(size_t at, block_t b) {
  if (g.nblocks == g.capblocks) {
    size_t nc = g.capblocks ? 2 * g.capblocks : 256;
    block_t *nb = realloc(g.blocks, nc * sizeof *nb);
    if (!nb) return -1;
    g.blocks = nb;
    g.capblocks = nc;
  }
  memmove(&g.blocks[at + 1], &g.blocks[at], (g.nblocks - at) * sizeof *g.blocks);
  g.blocks[at] = b;
  g.nblocks++;
  return 0;
}

EMU_API aclError aclrtMalloc(void **devPtr, size_t size, int policy) {
  (void)policy;
  NEED_INIT("aclrtMalloc");
  if (!devPtr || size == 0) {
    emu_set_err("aclrtMalloc: null pointer or zero size");
    return ACL_ERROR_INVALID_PARAM;
  }
  if (t_device < 0) {
    emu_set_err("aclrtMalloc: no device set on this thread (call aclrtSetDevice)");
    return ACL_ERROR_INVALID_DEVICE;
  }
  /* CANN: "real alloc size is aligned to 32 bytes and padded with 32 bytes"; we align
   * to 64 and remember the requested size so that overruns are reported. */
  size_t rounded = (size + 32 + 63) & ~(size_t)63;
  pthread_mutex_lock(&g.mu);
  size_t i;
  for (i = 0; i < g.nblocks; i++)
    if (!g.blocks[i].used && g.blocks[i].size >= rounded) break;
  if (i < g.nblocks) {
    block_t *b = &g.blocks[i];
    if (b->size > rounded) {
      block_t rest = {b->off + rounded, b->size - rounded, 0, 0, -1};
      b->size = rounded;
      if (insert_block(i + 1, rest)) goto oom;
      b = &g.blocks[i];
    }
    b->used = 1;
    b->req = size;
    b->device = t_device;
    *devPtr = g.arena + b->off;
    pthread_mutex_unlock(&g.mu);
    return ACL_SUCCESS;
  }
  if (g.top + rounded > g.arena_size) goto oom;
  block_t nb = {g.top, rounded, size, 1, t_device};
  if (insert_block(g.nblocks, nb)) goto oom;
  *devPtr = g.arena + g.top;
  g.top += rounded;
  pthread_mutex_unlock(&g.mu);
  return ACL_SUCCESS;
oom:
  pthread_mutex_unlock(&g.mu);
  emu_set_err("aclrtMalloc: out of emulated device memory (%zu bytes requested; DSGATE_EMU_DEVICE_BYTES=%zu)", size, g.arena_size);
  return ACL_ERROR_BAD_ALLOC;
}

EMU_API aclError aclrtFree(void *devPtr) {
  NEED_INIT("aclrtFree");
  char *c = devPtr;
  pthread_mutex_lock(&g.mu);
  size_t i = (g.arena && c >= g.arena && c < g.arena + g.arena_size) ? find_block((size_t)(c - g.arena)) : g.nblocks;
  if (i == g.nblocks || !g.blocks[i].used || g.arena + g.blocks[i].off != c) {
    pthread_mutex_unlock(&g.mu);
    emu_set_err("aclrtFree: %p is not the start of a live device allocation", devPtr);
    return ACL_ERROR_INVALID_PARAM;
  }
  block_t *b = &g.blocks[i];
  b->used = 0;
  b->req = 0;
  if (b->size >= (1u << 20)) /* return the pages (and zero them) */
    fallocate(g.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)b->off, (off_t)b->size);
  /* coalesce with free neighbours */
  if (i + 1 < g.nblocks && !g.blocks[i + 1].used) {
    b->size += g.blocks[i + 1].size;
    memmove(&g.blocks[i + 1], &g.blocks[i + 2], (g.nblocks - i - 2) * sizeof *g.blocks);
    g.nblocks--;
  }
  if (i > 0 && !g.blocks[i - 1].used) {
    g.blocks[i - 1].size += g.blocks[i].size;
    memmove(&g.blocks[i], &g.blocks[i + 1], (g.nblocks - i - 1) * sizeof *g.blocks);
    g.nblocks--;
  }
  pthread_mutex_unlock(&g.mu);
  return ACL_SUCCESS;
}

EMU_API aclError aclrtMallocHost(void **hostPtr, size_t size) {
  NEED_INIT("aclrtMallocHost");
  if (!hostPtr || !size) return ACL_ERROR_INVALID_PARAM;
  *hostPtr = malloc(size);
  if (!*hostPtr) return ACL_ERROR_BAD_ALLOC;
  return ACL_SUCCESS;
}

EMU_API aclError aclrtFreeHost(void *hostPtr) {
  free(hostPtr);
  return ACL_SUCCESS;
}

EMU_API aclError aclrtGetMemInfo(int attr, size_t *freeB, size_t *total) {
  (void)attr;
  NEED_INIT("aclrtGetMemInfo");
  pthread_mutex_lock(&g.mu);
  size_t used = 0;
  for (size_t i = 0; i < g.nblocks; i++)
    if (g.blocks[i].used) used += g.blocks[i].size;
  pthread_mutex_unlock(&g.mu);
  if (total) *total = g.arena_size;
  if (freeB) *freeB = g.arena_size - used;
  return ACL_SUCCESS;
}

/* ---------------- copies ---------------- */
typedef struct {
  void *dst;
  const void *src;
  size_t n;
} copy_t;

static int check_copy(const char *fn, void *dst, size_t destMax, const void *src, size_t count, int kind) {
  if (!dst || !src) {
    emu_set_err("%s: null pointer", fn);
    return ACL_ERROR_INVALID_PARAM;
  }
  if (destMax < count) {
    emu_set_err("%s: destMax %zu < count %zu", fn, destMax, count);
    return ACL_ERROR_INVALID_PARAM;
  }
  size_t da = 0, sa = 0;
  int dd = emu_dev_block(dst, &da), sd = emu_dev_block(src, &sa);
  int want_dd, want_sd;
  switch (kind) {
  case ACL_MEMCPY_HOST_TO_HOST: want_dd = 0; want_sd = 0; break;
  case ACL_MEMCPY_HOST_TO_DEVICE: want_dd = 1; want_sd = 0; break;
  case ACL_MEMCPY_DEVICE_TO_HOST: want_dd = 0; want_sd = 1; break;
  case ACL_MEMCPY_DEVICE_TO_DEVICE: want_dd = 1; want_sd = 1; break;
  case ACL_MEMCPY_DEFAULT: want_dd = dd >= 0; want_sd = sd >= 0; break;
  default:
    emu_set_err("%s: unsupported copy kind %d", fn, kind);
    return ACL_ERROR_INVALID_PARAM;
  }
  if ((dd >= 0) != want_dd || (sd >= 0) != want_sd) {
    emu_set_err("%s: kind %d does not match the pointers (dst %s, src %s)", fn, kind,
                dd >= 0 ? "device" : "host", sd >= 0 ? "device" : "host");
    return ACL_ERROR_INVALID_PARAM;
  }
  if ((dd >= 0 && da < count) || (sd >= 0 && sa < count)) {
    emu_set_err("%s: %zu bytes overrun the device allocation (%zu bytes left after dst, %zu after src)", fn, count,
                dd >= 0 ? da : (size_t)0, sd >= 0 ? sa : (size_t)0);
    return ACL_ERROR_INVALID_PARAM;
  }
  return ACL_SUCCESS;
}

EMU_API aclError aclrtMemcpy(void *dst, size_t destMax, const void *src, size_t count, int kind) {
  NEED_INIT("aclrtMemcpy");
  int rc = check_copy("aclrtMemcpy", dst, destMax, src, count, kind);
  if (rc) return rc;
  memmove(emu_alias(dst), emu_alias(src), count);
  return ACL_SUCCESS;
}

static int run_copy(void *arg, char *err, size_t errlen) {
  (void)err;
  (void)errlen;
  copy_t *c = arg;
  memmove(emu_alias(c->dst), emu_alias(c->src), c->n);
  return 0;
}

EMU_API aclError aclrtMemcpyAsync(void *dst, size_t destMax, const void *src, size_t count, int kind, aclrtStream stream) {
  NEED_INIT("aclrtMemcpyAsync");
  int rc = check_copy("aclrtMemcpyAsync", dst, destMax, src, count, kind);
  if (rc) return rc;
  if (kind == ACL_MEMCPY_DEVICE_TO_DEVICE && (((uintptr_t)dst | (uintptr_t)src) & 63)) {
    emu_set_err("aclrtMemcpyAsync: device-to-device async copies need 64-byte aligned src and dst");
    return ACL_ERROR_INVALID_PARAM;
  }
  copy_t *c = malloc(sizeof *c);
  if (!c) return ACL_ERROR_BAD_ALLOC;
  *c = (copy_t){dst, src, count};
  rc = emu_stream_enqueue(stream, "aclrtMemcpyAsync", run_copy, c, free);
  return rc;
}

typedef struct {
  void *dst;
  int v;
  size_t n;
} set_t;

static int run_set(void *arg, char *err, size_t errlen) {
  (void)err;
  (void)errlen;
  set_t *s = arg;
  memset(emu_alias(s->dst), s->v, s->n);
  return 0;
}

EMU_API aclError aclrtMemsetAsync(void *devPtr, size_t maxCount, int32_t value, size_t count, aclrtStream stream) {
  NEED_INIT("aclrtMemsetAsync");
  size_t a = 0;
  if (emu_dev_block(devPtr, &a) < 0 || maxCount < count || a < count) {
    emu_set_err("aclrtMemsetAsync: %p is not device memory with %zu bytes", devPtr, count);
    return ACL_ERROR_INVALID_PARAM;
  }
  set_t *s = malloc(sizeof *s);
  if (!s) return ACL_ERROR_BAD_ALLOC;
  *s = (set_t){devPtr, value, count};
  return emu_stream_enqueue(stream, "aclrtMemsetAsync", run_set, s, free);
}

/* ---------------- streams ---------------- */
typedef struct {
  const char *name;
  emu_task_fn fn;
  void *arg;
  void (*free_arg)(void *);
} task_t;

#define STREAM_MAGIC 0x5eea3a11u
typedef struct {
  uint32_t magic;
  int device;
  task_t *q;
  size_t n, cap;
} stream_t;

EMU_API aclError aclrtCreateStream(aclrtStream *stream) {
  NEED_INIT("aclrtCreateStream");
  if (!stream) return ACL_ERROR_INVALID_PARAM;
  if (t_device < 0) {
    emu_set_err("aclrtCreateStream: no device set on this thread");
    return ACL_ERROR_INVALID_DEVICE;
  }
  stream_t *s = calloc(1, sizeof *s);
  if (!s) return ACL_ERROR_BAD_ALLOC;
  s->magic = STREAM_MAGIC;
  s->device = t_device;
  *stream = s;
  return ACL_SUCCESS;
}

static stream_t *as_stream(aclrtStream st) {
  stream_t *s = st;
  return (s && s->magic == STREAM_MAGIC) ? s : NULL;
}

EMU_API int emu_stream_device(aclrtStream st) {
  stream_t *s = as_stream(st);
  return s ? s->device : -1;
}

EMU_API int emu_stream_enqueue(aclrtStream st, const char *name, emu_task_fn fn, void *arg, void (*free_arg)(void *)) {
  stream_t *s = as_stream(st);
  if (!s) {
    emu_set_err("%s: invalid stream handle %p", name, st);
    if (free_arg) free_arg(arg);
    return ACL_ERROR_INVALID_RESOURCE_HANDLE;
  }
  if (s->n == s->cap) {
    size_t nc = s->cap ? 2 * s->cap : 64;
    task_t *nq = realloc(s->q, nc * sizeof *nq);
    if (!nq) {
      if (free_arg) free_arg(arg);
      return ACL_ERROR_BAD_ALLOC;
    }
    s->q = nq;
    s->cap = nc;
  }
  s->q[s->n++] = (task_t){name, fn, arg, free_arg};
  return ACL_SUCCESS;
}

EMU_API aclError aclrtSynchronizeStream(aclrtStream st) {
  NEED_INIT("aclrtSynchronizeStream");
  stream_t *s = as_stream(st);
  if (!s) {
    emu_set_err("aclrtSynchronizeStream: invalid stream handle %p", st);
    return ACL_ERROR_INVALID_RESOURCE_HANDLE;
  }
  int rc = ACL_SUCCESS;
  char msg[768];
  for (size_t i = 0; i < s->n; i++) {
    task_t *t = &s->q[i];
    if (rc == ACL_SUCCESS) {
      msg[0] = 0;
      int r = t->fn(t->arg, msg, sizeof msg);
      if (r) {
        rc = r;
        emu_set_err("aclrtSynchronizeStream: task %zu (%s) failed: %s", i, t->name, msg);
      }
    }
    if (t->free_arg) t->free_arg(t->arg);
  }
  s->n = 0;
  return rc;
}

EMU_API aclError aclrtDestroyStream(aclrtStream st) {
  stream_t *s = as_stream(st);
  if (!s) {
    emu_set_err("aclrtDestroyStream: invalid stream handle %p", st);
    return ACL_ERROR_INVALID_RESOURCE_HANDLE;
  }
  for (size_t i = 0; i < s->n; i++)
    if (s->q[i].free_arg) s->q[i].free_arg(s->q[i].arg);
  free(s->q);
  s->magic = 0;
  free(s);
  return ACL_SUCCESS;
}
