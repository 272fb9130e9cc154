/* hccl.c — libhccl.so of the CANN emulator (hccl.h subset, CANN 8.1.RC1): communicators
 * and the collectives AllReduce / AllGather.
 *
 * Two kinds of communicator:
 *  - HcclCommInitAll: the W ranks of one process share one in-memory group.
 *  - HcclGetRootInfo + HcclCommInitRootInfo: ranks in any processes, on any hosts.
 *    HcclGetRootInfo starts a hub in the calling process: a thread listening on TCP
 *    (host from EMU_HCCL_HOST, default 127.0.0.1; ephemeral port). The root info holds
 *    "dsgate-emu-hub <group id> <port> <host>". HcclCommInitRootInfo connects to the hub
 *    and returns once all nRanks ranks have joined. Each collective sends the rank's
 *    input to the hub, which combines them when every rank has sent (a star; one hub
 *    thread per rank connection) and sends each rank its result. Hosts must share byte
 *    order (the emulator runs on one kind of CPU).
 *
 * A collective is stream work: it runs at aclrtSynchronizeStream and blocks there until
 * every rank of the communicator has reached the same collective with the same count,
 * dtype and op (else HCCL_E_PARA), or fails with HCCL_E_TIMEOUT after
 * DSGATE_EMU_HCCL_TIMEOUT_MS (default 60000). A rank whose connection to the hub drops
 * breaks the communicator: the other ranks' pending and later collectives fail at once
 * with HCCL_E_INTERNAL naming it. Sums run in fp32 in rank order and round once to the
 * element type. Nothing aborts: every failure is an HcclResult with a message for
 * aclGetRecentErrMsg (or the failed stream task). */

#include "tensor.h"
#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { C_ALLREDUCE = 1, C_ALLGATHER = 2 };
/* group_t is the rendezvous of one communicator's ranks: all ranks of an HcclCommInitAll
 * group in one process, or the hub's connection threads of a root-info group. */
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
  char why[256]; /* why the group broke (empty: a failed collective) */
} group_t;

/* hconn_t is a rank's connection to the hub of its root-info group. */
typedef struct {
  int fd;
  atomic_int refs;  /* the comm and each queued collective */
  atomic_int broken; /* the stream of messages is out of step after an I/O failure */
} hconn_t;

#define COMM_MAGIC 0xcc0aa001u
typedef struct {
  uint32_t magic;
  group_t *g;  /* HcclCommInitAll */
  hconn_t *h;  /* root info: the connection to the hub */
  int rank, device, n;
} comm_t;

static long timeout_ms(void) {
  const char *v = getenv("DSGATE_EMU_HCCL_TIMEOUT_MS");
  long ms = v ? atol(v) : 0;
  return ms > 0 ? ms : 60000;
}

static int alloc_slots(group_t *g, int n) {
  g->n = n;
  g->send = calloc((size_t)n, sizeof *g->send);
  g->recv = calloc((size_t)n, sizeof *g->recv);
  return g->send && g->recv ? 0 : -1;
}

static group_t *group_new(int n) {
  group_t *g = calloc(1, sizeof *g);
  if (!g) return NULL;
  pthread_mutex_init(&g->mu, NULL);
  pthread_cond_init(&g->cv, NULL);
  if (n > 0 && alloc_slots(g, n)) {
    free(g->send), free(g->recv), free(g);
    return NULL;
  }
  return g;
}

static void group_free(group_t *g) {
  pthread_mutex_destroy(&g->mu);
  pthread_cond_destroy(&g->cv);
  free(g->send), free(g->recv), free(g);
}

static void deadline(struct timespec *ts) {
  long ms = timeout_ms();
  clock_gettime(CLOCK_REALTIME, ts);
  ts->tv_sec += ms / 1000;
  ts->tv_nsec += (ms % 1000) * 1000000L;
  if (ts->tv_nsec >= 1000000000L) ts->tv_sec++, ts->tv_nsec -= 1000000000L;
}

static long long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
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

/* arrive is one rank reaching a collective of g (g->mu held): it records the buffers,
 * computes when it is the last, else waits for the others (or the timeout). */
static int arrive(group_t *g, int rank, int kind, int dtype, int op, uint64_t count, const void *send, void *recv, char *err,
                  size_t errlen) {
  const char *name = kind == C_ALLREDUCE ? "HcclAllReduce" : "HcclAllGather";
  if (g->broken) {
    snprintf(err, errlen, "%s: communicator is broken: %s", name, g->why[0] ? g->why : "an earlier collective failed");
    return HCCL_E_INTERNAL;
  }
  if (g->arrived == 0) {
    g->kind = kind, g->dtype = dtype, g->op = op, g->count = count;
  } else if (g->kind != kind || g->dtype != dtype || g->op != op || g->count != count) {
    g->broken = 1;
    snprintf(g->why, sizeof g->why, "rank %d issued a mismatched collective", rank);
    pthread_cond_broadcast(&g->cv);
    snprintf(err, errlen, "%s on rank %d does not match the collective other ranks issued (count %llu vs %llu)", name, rank,
             (unsigned long long)count, (unsigned long long)g->count);
    return HCCL_E_PARA;
  }
  g->send[rank] = send;
  g->recv[rank] = recv;
  unsigned long my = g->gen;
  int rc = 0;
  if (++g->arrived == g->n) {
    rc = compute(g, err, errlen);
    g->arrived = 0;
    g->gen++;
    pthread_cond_broadcast(&g->cv);
    return rc;
  }
  struct timespec ts;
  deadline(&ts);
  while (g->gen == my && !g->broken) {
    if (pthread_cond_timedwait(&g->cv, &g->mu, &ts) == ETIMEDOUT) {
      g->broken = 1;
      snprintf(g->why, sizeof g->why, "%s timed out on rank %d", name, rank);
      pthread_cond_broadcast(&g->cv);
      snprintf(err, errlen, "%s: rank %d waited %ld ms for %d of %d ranks to join", name, rank, timeout_ms(), g->n - g->arrived, g->n);
      return HCCL_E_TIMEOUT;
    }
  }
  if (g->gen == my) {
    snprintf(err, errlen, "%s: another rank failed: %s", name, g->why[0] ? g->why : "a collective failed");
    return HCCL_E_INTERNAL;
  }
  return 0;
}

/* ---------------------------------------------------------------- the hub (root info) */

#define HUB_MAGIC 0xd5a7e001u
#define ROOT_PREFIX "dsgate-emu-hub"
/* Messages, in host byte order: a rank sends hello once, then per collective a req and
 * its input; the hub answers each with a rep (and, on success, the result). */
typedef struct { uint32_t magic, nranks, rank, pad; uint64_t id; } hello_t;
typedef struct { uint32_t magic; int32_t kind, dtype, op; uint64_t count; } req_t;
typedef struct { int32_t rc, pad; uint64_t bytes; char msg[512]; } rep_t;

/* io moves exactly n bytes (writing or reading) before deadline_ms (monotonic; < 0 =
 * none). It returns 0, or -1 with errno (ETIMEDOUT; ECONNRESET at end of stream). */
static int io(int fd, void *buf, size_t n, int writing, long long deadline_ms) {
  char *p = buf;
  while (n > 0) {
    if (deadline_ms >= 0) {
      long long left = deadline_ms - now_ms();
      if (left <= 0) {
        errno = ETIMEDOUT;
        return -1;
      }
      struct pollfd pf = {.fd = fd, .events = writing ? POLLOUT : POLLIN};
      int pr = poll(&pf, 1, left > INT_MAX ? INT_MAX : (int)left);
      if (pr < 0 && errno == EINTR) continue;
      if (pr < 0) return -1;
      if (pr == 0) {
        errno = ETIMEDOUT;
        return -1;
      }
    }
    ssize_t k = writing ? send(fd, p, n, MSG_NOSIGNAL) : recv(fd, p, n, 0);
    if (k < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (k < 0) return -1;
    if (k == 0) {
      errno = ECONNRESET;
      return -1;
    }
    p += k;
    n -= (size_t)k;
  }
  return 0;
}

static void nodelay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

typedef struct {
  int lfd;
  uint64_t id;
  group_t *g;      /* n == 0 until the first rank says the size */
  char *have;      /* ranks that joined (guarded by g->mu) */
  atomic_int done; /* every rank joined, or the group broke: stop accepting */
  atomic_int refs; /* the accept thread and each connection thread */
} hub_t;

static void hub_unref(hub_t *h) {
  if (atomic_fetch_sub(&h->refs, 1) == 1) {
    free(h->have);
    group_free(h->g);
    free(h);
  }
}

typedef struct {
  hub_t *h;
  int fd;
} conn_arg_t;

static int reply(int fd, int rc, uint64_t bytes, const char *msg) {
  rep_t r;
  memset(&r, 0, sizeof r);
  r.rc = rc;
  r.bytes = bytes;
  snprintf(r.msg, sizeof r.msg, "%s", msg ? msg : "");
  return io(fd, &r, sizeof r, 1, now_ms() + timeout_ms());
}

/* hub_join admits one rank (g->mu held) and waits until every rank has joined. */
static int hub_join(hub_t *h, const hello_t *m, char *err, size_t errlen) {
  group_t *g = h->g;
  if (m->magic != HUB_MAGIC || m->id != h->id) {
    snprintf(err, errlen, "HcclCommInitRootInfo: the root info names group %llx, this hub serves %llx (a stale root info?)",
             (unsigned long long)m->id, (unsigned long long)h->id);
    return HCCL_E_PARA;
  }
  if (g->broken) {
    snprintf(err, errlen, "HcclCommInitRootInfo: the communicator is broken: %s", g->why);
    return HCCL_E_INTERNAL;
  }
  if (g->n > 0 && g->joined == g->n) { /* formed: a late comer must not break it */
    snprintf(err, errlen, "HcclCommInitRootInfo: rank %u: this root info's communicator has already formed (a stale root info, or a rank joining twice?)",
             m->rank);
    return HCCL_E_PARA;
  }
  if (g->n == 0) {
    h->have = calloc(m->nranks, 1);
    if (!h->have || alloc_slots(g, (int)m->nranks)) {
      snprintf(err, errlen, "HcclCommInitRootInfo: out of host memory");
      return HCCL_E_MEMORY;
    }
  }
  if (g->n != (int)m->nranks || h->have[m->rank]) {
    /* the group can never form: fail the ranks already waiting too */
    if (g->n != (int)m->nranks)
      snprintf(g->why, sizeof g->why, "rank %u says %u ranks, another said %d", m->rank, m->nranks, g->n);
    else
      snprintf(g->why, sizeof g->why, "rank %u joined twice", m->rank);
    g->broken = 1;
    pthread_cond_broadcast(&g->cv);
    snprintf(err, errlen, "HcclCommInitRootInfo: %s", g->why);
    return HCCL_E_PARA;
  }
  h->have[m->rank] = 1;
  g->joined++;
  pthread_cond_broadcast(&g->cv);
  struct timespec ts;
  deadline(&ts);
  while (g->joined < g->n && !g->broken) {
    if (pthread_cond_timedwait(&g->cv, &g->mu, &ts) == ETIMEDOUT) {
      g->broken = 1;
      snprintf(g->why, sizeof g->why, "HcclCommInitRootInfo timed out: %d of %d ranks joined in %ld ms", g->joined, g->n, timeout_ms());
      pthread_cond_broadcast(&g->cv);
    }
  }
  if (g->broken) {
    snprintf(err, errlen, "HcclCommInitRootInfo: %s", g->why);
    return strstr(g->why, "timed out") ? HCCL_E_TIMEOUT : HCCL_E_PARA;
  }
  atomic_store(&h->done, 1);
  return 0;
}

static void hub_break(group_t *g, const char *why) {
  pthread_mutex_lock(&g->mu);
  if (!g->broken) {
    g->broken = 1;
    snprintf(g->why, sizeof g->why, "%s", why);
  }
  pthread_cond_broadcast(&g->cv);
  pthread_mutex_unlock(&g->mu);
}

/* hub_conn serves one rank's connection: the join, then its collectives. */
static void *hub_conn(void *arg) {
  conn_arg_t *ca = arg;
  hub_t *h = ca->h;
  int fd = ca->fd;
  free(ca);
  group_t *g = h->g;
  char err[512] = "", why[256];
  void *sbuf = NULL, *rbuf = NULL;
  hello_t m;
  if (io(fd, &m, sizeof m, 0, now_ms() + timeout_ms())) goto out;
  if (m.nranks < 1 || m.nranks > 4096 || m.rank >= m.nranks) {
    reply(fd, HCCL_E_PARA, 0, "HcclCommInitRootInfo: bad rank or size");
    goto out;
  }
  pthread_mutex_lock(&g->mu);
  int rc = hub_join(h, &m, err, sizeof err);
  pthread_mutex_unlock(&g->mu);
  if (reply(fd, rc, 0, err) || rc) {
    if (!rc) hub_break(g, "a rank's connection failed while joining");
    goto out;
  }
  for (;;) {
    req_t q;
    if (io(fd, &q, sizeof q, 0, -1)) {
      snprintf(why, sizeof why, "rank %u left the communicator (its connection to the hub closed: process gone or communicator destroyed)",
               m.rank);
      hub_break(g, why);
      break;
    }
    int es = hccl_size(q.dtype);
    if (q.magic != HUB_MAGIC || !es || (q.kind != C_ALLREDUCE && q.kind != C_ALLGATHER)) {
      snprintf(why, sizeof why, "rank %u sent a malformed request", m.rank);
      hub_break(g, why);
      break;
    }
    size_t in = (size_t)q.count * es, out = in * (q.kind == C_ALLGATHER ? (size_t)g->n : 1);
    void *ns = realloc(sbuf, in ? in : 1), *nr = ns ? realloc(rbuf, out ? out : 1) : NULL;
    if (ns) sbuf = ns;
    if (nr) rbuf = nr;
    if (!ns || !nr) {
      snprintf(why, sizeof why, "the hub ran out of host memory for rank %u's %zu-byte collective", m.rank, out);
      hub_break(g, why);
      reply(fd, HCCL_E_MEMORY, 0, why);
      break;
    }
    if (io(fd, sbuf, in, 0, now_ms() + timeout_ms())) {
      snprintf(why, sizeof why, "rank %u's connection failed while sending a collective", m.rank);
      hub_break(g, why);
      break;
    }
    err[0] = 0;
    pthread_mutex_lock(&g->mu);
    rc = arrive(g, (int)m.rank, q.kind, q.dtype, q.op, q.count, sbuf, rbuf, err, sizeof err);
    pthread_mutex_unlock(&g->mu);
    if (reply(fd, rc, rc ? 0 : out, err) || (!rc && io(fd, rbuf, out, 1, now_ms() + timeout_ms()))) {
      snprintf(why, sizeof why, "rank %u's connection failed while receiving a result", m.rank);
      hub_break(g, why);
      break;
    }
  }
out:
  close(fd);
  free(sbuf);
  free(rbuf);
  hub_unref(h);
  return NULL;
}

/* hub_state says whether the group has formed or broken (*over) and whether any rank
 * has joined yet (*anyone). */
static void hub_state(hub_t *h, int *over, int *anyone) {
  pthread_mutex_lock(&h->g->mu);
  *over = h->g->broken || atomic_load(&h->done);
  *anyone = h->g->n > 0;
  pthread_mutex_unlock(&h->g->mu);
}

/* hub_refuse answers a connection that comes after the group formed or broke. */
static void hub_refuse(int fd) {
  hello_t m;
  if (io(fd, &m, sizeof m, 0, now_ms() + 1000) == 0)
    reply(fd, HCCL_E_PARA, 0,
          "HcclCommInitRootInfo: this root info's communicator has already formed or failed (a stale root info, or a rank joining twice?)");
  close(fd);
}

/* hub_accept admits ranks until the group has formed or broken, then refuses late
 * comers until every rank's connection has closed. A hub nobody joins within the
 * timeout stops. */
static void *hub_accept(void *arg) {
  hub_t *h = arg;
  long long idle_until = now_ms() + timeout_ms();
  for (;;) {
    int over, anyone;
    hub_state(h, &over, &anyone);
    if ((over && atomic_load(&h->refs) == 1) || (!anyone && now_ms() > idle_until)) break;
    struct pollfd pf = {.fd = h->lfd, .events = POLLIN};
    if (poll(&pf, 1, 200) <= 0) continue;
    int fd = accept(h->lfd, NULL, NULL);
    if (fd < 0) continue;
    nodelay(fd);
    hub_state(h, &over, &anyone);
    if (over) {
      hub_refuse(fd);
      continue;
    }
    conn_arg_t *ca = malloc(sizeof *ca);
    pthread_t t;
    if (!ca) {
      close(fd);
      continue;
    }
    *ca = (conn_arg_t){h, fd};
    atomic_fetch_add(&h->refs, 1);
    if (pthread_create(&t, NULL, hub_conn, ca)) {
      atomic_fetch_sub(&h->refs, 1);
      close(fd);
      free(ca);
      continue;
    }
    pthread_detach(t);
  }
  close(h->lfd);
  hub_unref(h);
  return NULL;
}

/* hub_start listens on EMU_HCCL_HOST (default 127.0.0.1), an ephemeral port, and starts
 * the accept thread. */
static HcclResult hub_start(hub_t **out, char *host, size_t hostlen, unsigned *port) {
  const char *hv = getenv("EMU_HCCL_HOST");
  snprintf(host, hostlen, "%s", hv && *hv ? hv : "127.0.0.1");
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *ai = NULL;
  int gai = getaddrinfo(host, "0", &hints, &ai);
  if (gai) {
    emu_set_err("HcclGetRootInfo: EMU_HCCL_HOST %s: %s", host, gai_strerror(gai));
    return HCCL_E_PARA;
  }
  int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  if (fd >= 0) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (fd < 0 || bind(fd, ai->ai_addr, ai->ai_addrlen) || listen(fd, 256)) {
    int e = errno;
    freeaddrinfo(ai);
    if (fd >= 0) close(fd);
    emu_set_err("HcclGetRootInfo: cannot listen on %s: %s", host, strerror(e));
    return HCCL_E_INTERNAL;
  }
  freeaddrinfo(ai);
  struct sockaddr_storage sa;
  socklen_t sl = sizeof sa;
  getsockname(fd, (struct sockaddr *)&sa, &sl);
  *port = ntohs(sa.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&sa)->sin6_port : ((struct sockaddr_in *)&sa)->sin_port);
  hub_t *h = calloc(1, sizeof *h);
  group_t *g = group_new(0);
  if (!h || !g) {
    free(h), free(g);
    close(fd);
    return HCCL_E_MEMORY;
  }
  static atomic_ullong seq;
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  h->lfd = fd;
  h->g = g;
  h->id = ((uint64_t)getpid() << 40) ^ ((uint64_t)ts.tv_sec << 20) ^ (uint64_t)ts.tv_nsec ^ (atomic_fetch_add(&seq, 1) << 56);
  atomic_store(&h->refs, 1);
  pthread_t t;
  if (pthread_create(&t, NULL, hub_accept, h)) {
    close(fd);
    group_free(g);
    free(h);
    emu_set_err("HcclGetRootInfo: cannot start the hub thread");
    return HCCL_E_INTERNAL;
  }
  pthread_detach(t);
  *out = h;
  return HCCL_SUCCESS;
}

static void hconn_unref(hconn_t *c) {
  if (atomic_fetch_sub(&c->refs, 1) == 1) {
    close(c->fd);
    free(c);
  }
}

/* ---------------------------------------------------------------- API */

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
  if (!g) return HCCL_E_MEMORY;
  g->joined = g->refs = (int)ndev;
  for (uint32_t i = 0; i < ndev; i++) {
    comm_t *c = calloc(1, sizeof *c);
    if (!c) return HCCL_E_MEMORY;
    *c = (comm_t){.magic = COMM_MAGIC, .g = g, .rank = (int)i, .device = devices[i], .n = (int)ndev};
    comms[i] = c;
  }
  return HCCL_SUCCESS;
}

EMU_API HcclResult HcclGetRootInfo(HcclRootInfo *rootInfo) {
  if (!rootInfo) return HCCL_E_PTR;
  hub_t *h = NULL;
  char host[256];
  unsigned port = 0;
  HcclResult rc = hub_start(&h, host, sizeof host, &port);
  if (rc) return rc;
  memset(rootInfo, 0, sizeof *rootInfo);
  snprintf(rootInfo->internal, sizeof rootInfo->internal, ROOT_PREFIX " %llx %u %s", (unsigned long long)h->id, port, host);
  return HCCL_SUCCESS;
}

/* dial connects to host:port, giving up after the HCCL timeout. */
static int dial(const char *host, unsigned port, char *err, size_t errlen) {
  char ps[16];
  snprintf(ps, sizeof ps, "%u", port);
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai = NULL;
  int gai = getaddrinfo(host, ps, &hints, &ai);
  if (gai) {
    snprintf(err, errlen, "%s: %s", host, gai_strerror(gai));
    return -1;
  }
  int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  long ms = timeout_ms();
  struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
  if (fd >= 0) setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv); /* bounds connect */
  if (fd < 0 || connect(fd, ai->ai_addr, ai->ai_addrlen)) {
    snprintf(err, errlen, "cannot connect to the hub at %s:%u: %s", host, port, strerror(errno));
    freeaddrinfo(ai);
    if (fd >= 0) close(fd);
    return -1;
  }
  freeaddrinfo(ai);
  nodelay(fd);
  return fd;
}

EMU_API HcclResult HcclCommInitRootInfo(uint32_t nRanks, const HcclRootInfo *rootInfo, uint32_t rank, HcclComm *comm) {
  unsigned long long id = 0;
  unsigned port = 0;
  char host[256] = "", err[512] = "";
  if (!rootInfo || !comm || nRanks < 1 || rank >= nRanks ||
      sscanf(rootInfo->internal, ROOT_PREFIX " %llx %u %255s", &id, &port, host) != 3) {
    emu_set_err("HcclCommInitRootInfo: invalid arguments or root info (rank %u of %u)", rank, nRanks);
    return HCCL_E_PARA;
  }
  int fd = dial(host, port, err, sizeof err);
  if (fd < 0) {
    emu_set_err("HcclCommInitRootInfo: rank %u: %s", rank, err);
    return HCCL_E_INTERNAL;
  }
  hello_t m = {.magic = HUB_MAGIC, .nranks = nRanks, .rank = rank, .id = id};
  rep_t r;
  long long dl = now_ms() + timeout_ms() + 5000; /* the hub reports its own timeout first */
  if (io(fd, &m, sizeof m, 1, dl) || io(fd, &r, sizeof r, 0, dl)) {
    int e = errno;
    close(fd);
    emu_set_err("HcclCommInitRootInfo: rank %u: no answer from the hub at %s:%u: %s", rank, host, port, strerror(e));
    return e == ETIMEDOUT ? HCCL_E_TIMEOUT : HCCL_E_INTERNAL;
  }
  if (r.rc) {
    close(fd);
    r.msg[sizeof r.msg - 1] = 0;
    emu_set_err("%s", r.msg);
    return r.rc;
  }
  comm_t *c = calloc(1, sizeof *c);
  hconn_t *hc = calloc(1, sizeof *hc);
  if (!c || !hc) {
    free(c), free(hc);
    close(fd);
    return HCCL_E_MEMORY;
  }
  hc->fd = fd;
  atomic_store(&hc->refs, 1);
  *c = (comm_t){.magic = COMM_MAGIC, .h = hc, .rank = (int)rank, .device = emu_current_device(), .n = (int)nRanks};
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
  if (c->h) hconn_unref(c->h); /* the hub sees the connection close */
  free(c); /* in-process groups are kept: other ranks may still reference them */
  return HCCL_SUCCESS;
}

typedef struct {
  comm_t c; /* copy: the communicator may be destroyed before the stream runs (c.h is referenced) */
  int kind, dtype, op;
  uint64_t count;
  const void *send;
  void *recv;
} coll_t;

static void coll_free(void *arg) {
  coll_t *a = arg;
  if (a->c.h) hconn_unref(a->c.h);
  free(a);
}

/* run_hub runs a collective through the hub: send the input, receive the result. */
static int run_hub(coll_t *a, char *err, size_t errlen) {
  const char *name = a->kind == C_ALLREDUCE ? "HcclAllReduce" : "HcclAllGather";
  hconn_t *h = a->c.h;
  if (atomic_load(&h->broken)) {
    snprintf(err, errlen, "%s: rank %d's connection to the hub failed earlier", name, a->c.rank);
    return HCCL_E_INTERNAL;
  }
  size_t es = (size_t)hccl_size(a->dtype), in = a->count * es, out = in * (a->kind == C_ALLGATHER ? (size_t)a->c.n : 1);
  req_t q = {.magic = HUB_MAGIC, .kind = a->kind, .dtype = a->dtype, .op = a->op, .count = a->count};
  rep_t r;
  long long dl = now_ms() + timeout_ms() + 5000;
  const char *stage = "sending to";
  if (io(h->fd, &q, sizeof q, 1, dl) || io(h->fd, emu_alias(a->send), in, 1, dl)) goto fail;
  stage = "receiving from";
  if (io(h->fd, &r, sizeof r, 0, dl)) goto fail;
  if (r.rc) {
    r.msg[sizeof r.msg - 1] = 0;
    snprintf(err, errlen, "%s", r.msg);
    return r.rc;
  }
  if (r.bytes != out) {
    atomic_store(&h->broken, 1);
    snprintf(err, errlen, "%s: the hub answered %llu bytes, want %zu", name, (unsigned long long)r.bytes, out);
    return HCCL_E_INTERNAL;
  }
  if (io(h->fd, emu_alias(a->recv), out, 0, dl)) goto fail;
  return 0;
fail:;
  int e = errno;
  atomic_store(&h->broken, 1);
  snprintf(err, errlen, "%s: rank %d lost the hub (%s it: %s); the process holding rank 0's root info may be gone", name, a->c.rank, stage,
           strerror(e));
  return e == ETIMEDOUT ? HCCL_E_TIMEOUT : HCCL_E_INTERNAL;
}

static int run_coll(void *arg, char *err, size_t errlen) {
  coll_t *a = arg;
  if (a->c.h) return run_hub(a, err, errlen);
  group_t *g = a->c.g;
  pthread_mutex_lock(&g->mu);
  int rc = arrive(g, a->c.rank, a->kind, a->dtype, a->op, a->count, emu_alias(a->send), emu_alias(a->recv), err, errlen);
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
  uint64_t rbytes = count * es * (kind == C_ALLGATHER ? (uint64_t)c->n : 1);
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
  if (c->h) atomic_fetch_add(&c->h->refs, 1);
  return emu_stream_enqueue(stream, name, run_coll, a, coll_free) ? HCCL_E_INTERNAL : HCCL_SUCCESS;
}

EMU_API HcclResult HcclAllReduce(void *sendBuf, void *recvBuf, uint64_t count, int dataType, int op, HcclComm comm, aclrtStream stream) {
  return enqueue("HcclAllReduce", C_ALLREDUCE, sendBuf, recvBuf, count, dataType, op, comm, stream);
}

EMU_API HcclResult HcclAllGather(void *sendBuf, void *recvBuf, uint64_t sendCount, int dataType, HcclComm comm, aclrtStream stream) {
  return enqueue("HcclAllGather", C_ALLGATHER, sendBuf, recvBuf, sendCount, dataType, 0, comm, stream);
}
