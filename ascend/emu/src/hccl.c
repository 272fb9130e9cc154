/* hccl.c — libhccl.so of the CANN emulator: communicators of W ranks in one process
 * (HcclCommInitAll, or HcclGetRootInfo + HcclCommInitRootInfo within the process) and
 * the collectives AllReduce / AllGather (hccl.h subset, CANN 8.1.RC1).
 *
 * A collective is stream work: it runs at aclrtSynchronizeStream and blocks there until
 * every rank of the communicator has reached the same collective with the same count,
 * dtype and op (else HCCL_E_PARA), or fails with HCCL_E_TIMEOUT after
 * DSGATE_EMU_HCCL_TIMEOUT_MS (default 60000). Sums run in fp32 in rank order and round
 * once to the element type. */

#include "tensor.h"
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { C_ALLREDUCE = 1, C_ALLGATHER = 2 };
typedef struct group {
  pthread_mutex_t mu; /* guards everything below */
  pthread_cond_t cv;
  int n, joined, refs;
  uint64_t id;
  unsigned long gen;
  int arrived, kind, dtype, op, broken;
  uint64_t count;
  const void **send;
  void **recv;
  struct group *next;
} group_t;

#define COMM_MAGIC 0xcc0aa001u
typedef struct {
  uint32_t magic;
  group_t *g;
  int rank, device;
} comm_t;

static struct {
  pthread_mutex_t mu; /* guards list and next_id */
  group_t *list;
  uint64_t next_id;
} reg = {.mu = PTHREAD_MUTEX_INITIALIZER, .next_id = 1};

static long timeout_ms(void) {
  const char *v = getenv("DSGATE_EMU_HCCL_TIMEOUT_MS");
  long ms = v ? atol(v) : 0;
  return ms > 0 ? ms : 60000;
}

static group_t *group_new(int n) {
  group_t *g = calloc(1, sizeof *g);
  if (!g) return NULL;
  pthread_mutex_init(&g->mu, NULL);
  pthread_cond_init(&g->cv, NULL);
  g->n = n;
  if (n > 0) {
    g->send = calloc((size_t)n, sizeof *g->send);
    g->recv = calloc((size_t)n, sizeof *g->recv);
  }
  return g;
}

static void deadline(struct timespec *ts) {
  long ms = timeout_ms();
  clock_gettime(CLOCK_REALTIME, ts);
  ts->tv_sec += ms / 1000;
  ts->tv_nsec += (ms % 1000) * 1000000L;
  if (ts->tv_nsec >= 1000000000L) ts->tv_sec++, ts->tv_nsec -= 1000000000L;
}

EMU_API const char *HcclGetErrorString(HcclResult code) {
  switch (code) {
  case HCCL_SUCCESS: return "success";
  case HCCL_E_PARA: return "parameter error";
  case HCCL_E_PTR: return "empty pointer";
  case HCCL_E_MEMORY: return "memory error";
  case HCCL_E_INTERNAL: return "internal error";
  case HCCL_E_NOT_SUPPORT: return "not supported";
  case HCCL_E_TIMEOUT: return "timeout";
  }
  return "unknown error";
}

EMU_API HcclResult HcclCommInitAll(uint32_t ndev, int32_t *devices, HcclComm *comms) {
  if (!emu_initialized()) {
    emu_set_err("HcclCommInitAll: aclInit has not been called");
    return HCCL_E_INTERNAL;
  }
  if (ndev < 1 || !devices || !comms) {
    emu_set_err("HcclCommInitAll: invalid arguments");
    return HCCL_E_PARA;
  }
  group_t *g = group_new((int)ndev);
  if (!g || !g->send || !g->recv) return HCCL_E_MEMORY;
  g->joined = g->refs = (int)ndev;
  for (uint32_t i = 0; i < ndev; i++) {
    comm_t *c = calloc(1, sizeof *c);
    if (!c) return HCCL_E_MEMORY;
    *c = (comm_t){COMM_MAGIC, g, (int)i, devices[i]};
    comms[i] = c;
  }
  return HCCL_SUCCESS;
}

EMU_API HcclResult HcclGetRootInfo(HcclRootInfo *rootInfo) {
  if (!rootInfo) return HCCL_E_PTR;
  group_t *g = group_new(0);
  if (!g) return HCCL_E_MEMORY;
  pthread_mutex_lock(&reg.mu);
  g->id = reg.next_id++;
  g->next = reg.list;
  reg.list = g;
  pthread_mutex_unlock(&reg.mu);
  memset(rootInfo, 0, sizeof *rootInfo);
  snprintf(rootInfo->internal, sizeof rootInfo->internal, "dsgate-emu-root:%llu", (unsigned long long)g->id);
  return HCCL_SUCCESS;
}

EMU_API HcclResult HcclCommInitRootInfo(uint32_t nRanks, const HcclRootInfo *rootInfo, uint32_t rank, HcclComm *comm) {
  unsigned long long id = 0;
  if (!rootInfo || !comm || nRanks < 1 || rank >= nRanks || sscanf(rootInfo->internal, "dsgate-emu-root:%llu", &id) != 1) {
    emu_set_err("HcclCommInitRootInfo: invalid arguments or root info (the emulator's root info is valid in its own process only)");
    return HCCL_E_PARA;
  }
  pthread_mutex_lock(&reg.mu);
  group_t *g = reg.list;
  while (g && g->id != id) g = g->next;
  pthread_mutex_unlock(&reg.mu);
  if (!g) {
    emu_set_err("HcclCommInitRootInfo: unknown root info %llu", id);
    return HCCL_E_PARA;
  }
  pthread_mutex_lock(&g->mu);
  if (g->n == 0) {
    g->n = (int)nRanks;
    g->send = calloc(nRanks, sizeof *g->send);
    g->recv = calloc(nRanks, sizeof *g->recv);
  }
  if (g->n != (int)nRanks) {
    pthread_mutex_unlock(&g->mu);
    emu_set_err("HcclCommInitRootInfo: rank %u says %u ranks, another said %d", rank, nRanks, g->n);
    return HCCL_E_PARA;
  }
  g->joined++;
  g->refs++;
  pthread_cond_broadcast(&g->cv);
  struct timespec ts;
  deadline(&ts);
  while (g->joined < g->n) {
    if (pthread_cond_timedwait(&g->cv, &g->mu, &ts) == ETIMEDOUT) {
      g->joined--;
      g->refs--;
      pthread_mutex_unlock(&g->mu);
      emu_set_err("HcclCommInitRootInfo: timed out waiting for %d ranks", g->n);
      return HCCL_E_TIMEOUT;
    }
  }
  pthread_mutex_unlock(&g->mu);
  comm_t *c = calloc(1, sizeof *c);
  if (!c) return HCCL_E_MEMORY;
  *c = (comm_t){COMM_MAGIC, g, (int)rank, emu_current_device()};
  *comm = c;
  return HCCL_SUCCESS;
}

EMU_API HcclResult HcclCommDestroy(HcclComm comm) {
  comm_t *c = comm;
  if (!c || c->magic != COMM_MAGIC) {
    emu_set_err("HcclCommDestroy: invalid communicator");
    return HCCL_E_PARA;
  }
  c->magic = 0;
  free(c); /* groups are kept: other ranks may still reference them */
  return HCCL_SUCCESS;
}

static int hccl_size(int dt) {
  switch (dt) {
  case HCCL_DATA_TYPE_INT8: case HCCL_DATA_TYPE_UINT8: return 1;
  case HCCL_DATA_TYPE_INT16: case HCCL_DATA_TYPE_FP16: case HCCL_DATA_TYPE_BFP16: return 2;
  case HCCL_DATA_TYPE_INT32: case HCCL_DATA_TYPE_FP32: return 4;
  case HCCL_DATA_TYPE_INT64: case HCCL_DATA_TYPE_UINT64: return 8;
  }
  return 0;
}

static double hload(const void *p, int dt, uint64_t i) {
  switch (dt) {
  case HCCL_DATA_TYPE_INT8: return ((const int8_t *)p)[i];
  case HCCL_DATA_TYPE_UINT8: return ((const uint8_t *)p)[i];
  case HCCL_DATA_TYPE_INT16: return ((const int16_t *)p)[i];
  case HCCL_DATA_TYPE_FP16: return emu_f16_to_f32(((const uint16_t *)p)[i]);
  case HCCL_DATA_TYPE_BFP16: return emu_bf16_to_f32(((const uint16_t *)p)[i]);
  case HCCL_DATA_TYPE_INT32: return ((const int32_t *)p)[i];
  case HCCL_DATA_TYPE_FP32: return ((const float *)p)[i];
  case HCCL_DATA_TYPE_INT64: return (double)((const int64_t *)p)[i];
  case HCCL_DATA_TYPE_UINT64: return (double)((const uint64_t *)p)[i];
  }
  return 0;
}

static void hstore(void *p, int dt, uint64_t i, double v) {
  switch (dt) {
  case HCCL_DATA_TYPE_INT8: ((int8_t *)p)[i] = (int8_t)v; break;
  case HCCL_DATA_TYPE_UINT8: ((uint8_t *)p)[i] = (uint8_t)v; break;
  case HCCL_DATA_TYPE_INT16: ((int16_t *)p)[i] = (int16_t)v; break;
  case HCCL_DATA_TYPE_FP16: ((uint16_t *)p)[i] = emu_f32_to_f16((float)v); break;
  case HCCL_DATA_TYPE_BFP16: ((uint16_t *)p)[i] = emu_f32_to_bf16((float)v); break;
  case HCCL_DATA_TYPE_INT32: ((int32_t *)p)[i] = (int32_t)v; break;
  case HCCL_DATA_TYPE_FP32: ((float *)p)[i] = (float)v; break;
  case HCCL_DATA_TYPE_INT64: ((int64_t *)p)[i] = (int64_t)v; break;
  case HCCL_DATA_TYPE_UINT64: ((uint64_t *)p)[i] = (uint64_t)v; break;
  }
}

typedef struct {
  comm_t c; /* copy: the communicator may be destroyed before the stream runs */
  int kind, dtype, op;
  uint64_t count;
  const void *send;
  void *recv;
} coll_t;

static int compute(group_t *g, char *err, size_t errlen) {
  uint64_t n = g->count;
  int es = hccl_size(g->dtype);
  if (g->kind == C_ALLGATHER) {
    for (int r = 0; r < g->n; r++)
      for (int d = 0; d < g->n; d++) memmove((char *)g->recv[d] + (size_t)r * n * es, g->send[r], (size_t)n * es);
    return 0;
  }
  double *acc = malloc((size_t)(n ? n : 1) * sizeof *acc);
  if (!acc) {
    snprintf(err, errlen, "out of host memory");
    return HCCL_E_MEMORY;
  }
  int flt = g->dtype == HCCL_DATA_TYPE_FP32 || g->dtype == HCCL_DATA_TYPE_FP16 || g->dtype == HCCL_DATA_TYPE_BFP16;
  for (uint64_t i = 0; i < n; i++) {
    double a = hload(g->send[0], g->dtype, i);
    for (int r = 1; r < g->n; r++) {
      double b = hload(g->send[r], g->dtype, i);
      switch (g->op) {
      case HCCL_REDUCE_SUM: a = flt ? (double)((float)a + (float)b) : a + b; break;
      case HCCL_REDUCE_PROD: a *= b; break;
      case HCCL_REDUCE_MAX: a = b > a ? b : a; break;
      case HCCL_REDUCE_MIN: a = b < a ? b : a; break;
      }
    }
    acc[i] = a;
  }
  for (int d = 0; d < g->n; d++)
    for (uint64_t i = 0; i < n; i++) hstore(g->recv[d], g->dtype, i, acc[i]);
  free(acc);
  return 0;
}

static int run_coll(void *arg, char *err, size_t errlen) {
  coll_t *a = arg;
  group_t *g = a->c.g;
  const char *name = a->kind == C_ALLREDUCE ? "HcclAllReduce" : "HcclAllGather";
  pthread_mutex_lock(&g->mu);
  if (g->broken) {
    pthread_mutex_unlock(&g->mu);
    snprintf(err, errlen, "%s: communicator is broken by an earlier failed collective", name);
    return HCCL_E_INTERNAL;
  }
  if (g->arrived == 0) {
    g->kind = a->kind, g->dtype = a->dtype, g->op = a->op, g->count = a->count;
  } else if (g->kind != a->kind || g->dtype != a->dtype || g->op != a->op || g->count != a->count) {
    g->broken = 1;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
    snprintf(err, errlen, "%s on rank %d does not match the collective other ranks issued (count %llu vs %llu)", name, a->c.rank,
             (unsigned long long)a->count, (unsigned long long)g->count);
    return HCCL_E_PARA;
  }
  g->send[a->c.rank] = emu_alias(a->send);
  g->recv[a->c.rank] = emu_alias(a->recv);
  unsigned long my = g->gen;
  int rc = 0;
  if (++g->arrived == g->n) {
    rc = compute(g, err, errlen);
    g->arrived = 0;
    g->gen++;
    pthread_cond_broadcast(&g->cv);
  } else {
    struct timespec ts;
    deadline(&ts);
    while (g->gen == my && !g->broken) {
      if (pthread_cond_timedwait(&g->cv, &g->mu, &ts) == ETIMEDOUT) {
        g->broken = 1;
        pthread_cond_broadcast(&g->cv);
        snprintf(err, errlen, "%s: rank %d waited %ld ms for %d of %d ranks to join", name, a->c.rank, timeout_ms(), g->n - g->arrived,
                 g->n);
        rc = HCCL_E_TIMEOUT;
        break;
      }
    }
    if (!rc && g->gen == my) {
      snprintf(err, errlen, "%s: another rank failed", name);
      rc = HCCL_E_INTERNAL;
    }
  }
  pthread_mutex_unlock(&g->mu);
  return rc;
}

static HcclResult enqueue(const char *name, int kind, const void *send, void *recv, uint64_t count, int dt, int op, HcclComm comm,
                          aclrtStream stream) {
  comm_t *c = comm;
  if (!c || c->magic != COMM_MAGIC) {
    emu_set_err("%s: invalid communicator", name);
    return HCCL_E_PARA;
  }
  int es = hccl_size(dt);
  if (!es) {
    emu_set_err("%s: unsupported data type %d", name, dt);
    return HCCL_E_NOT_SUPPORT;
  }
  if (kind == C_ALLREDUCE && op == HCCL_REDUCE_PROD && dt == HCCL_DATA_TYPE_BFP16) {
    emu_set_err("%s: PROD is not supported for bf16", name);
    return HCCL_E_NOT_SUPPORT;
  }
  size_t sa = 0, ra = 0;
  uint64_t rbytes = count * es * (kind == C_ALLGATHER ? (uint64_t)c->g->n : 1);
  if (emu_dev_block(send, &sa) < 0 || emu_dev_block(recv, &ra) < 0) {
    emu_set_err("%s: send and recv buffers must be device memory", name);
    return HCCL_E_PTR;
  }
  if (sa < count * es || ra < rbytes) {
    emu_set_err("%s: buffers too small (send %zu bytes, recv %zu bytes, need %llu and %llu)", name, sa, ra,
                (unsigned long long)(count * es), (unsigned long long)rbytes);
    return HCCL_E_PARA;
  }
  if (emu_stream_device(stream) != c->device) {
    emu_set_err("%s: stream is on device %d, communicator rank %d on device %d", name, emu_stream_device(stream), c->rank, c->device);
    return HCCL_E_PARA;
  }
  coll_t *a = malloc(sizeof *a);
  if (!a) return HCCL_E_MEMORY;
  *a = (coll_t){*c, kind, dt, op, count, send, recv};
  return emu_stream_enqueue(stream, name, run_coll, a, free) ? HCCL_E_INTERNAL : HCCL_SUCCESS;
}

EMU_API HcclResult HcclAllReduce(void *sendBuf, void *recvBuf, uint64_t count, int dataType, int op, HcclComm comm, aclrtStream stream) {
  return enqueue("HcclAllReduce", C_ALLREDUCE, sendBuf, recvBuf, count, dataType, op, comm, stream);
}

EMU_API HcclResult HcclAllGather(void *sendBuf, void *recvBuf, uint64_t sendCount, int dataType, HcclComm comm, aclrtStream stream) {
  return enqueue("HcclAllGather", C_ALLGATHER, sendBuf, recvBuf, sendCount, dataType, 0, comm, stream);
}
