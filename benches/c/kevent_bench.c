/*
 * Eric Dumazet's epoll_bench workload from C, against libkevent and plain epoll, in one
 * binary and one run (README, "kevent from C"): N pipes; a writer thread writes ONE byte
 * into a random pipe (xorshift64, seed 1, the same sequence for every run), yielding the
 * CPU every N writes; one consumer (the main thread) waits for notifications, up to 1024
 * at a time, and does one nonblocking read of up to 64 bytes per notification, counting
 * the reads that returned data. The same as `kevent bench`'s pipe cell with one consumer
 * thread (benches/src/bench/), so the kevent / epoll ratios of the two can be compared.
 *
 * Backends, in rotation each round (a discarded warm-up run of each first), fresh pipes
 * for every run:
 *   epoll-lt   epoll_wait, EPOLLIN
 *   epoll-et   epoll_wait, EPOLLIN | EPOLLET
 *   kevent-lt  kevent_wait into the program's ring, one read per entry, kevent_commit
 *   kevent-et  the same with KEVENT_REQ_ET
 * (kevent: ring of max(1024, next power of two >= 2N) entries, KEVENT_REQ_ALWAYS_QUEUE,
 * as the Rust harness registers them.)
 *
 *   bash syscalls-sim/capi/build.sh
 *   gcc -O2 -pthread benches/c/kevent_bench.c \
 *       $(PKG_CONFIG_PATH=target/capi/lib/pkgconfig pkg-config --cflags --libs kevent) \
 *       -o target/capi/kevent_bench
 *   target/capi/kevent_bench [streams [seconds [rounds]]]     (2000 0.5 3)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include <kevent.h>

#define BATCH 1024
#define READ_BUF 64
#define BACKENDS 4
static const char *names[BACKENDS] = {"epoll-lt", "epoll-et", "kevent-lt", "kevent-et"};

static int n;
static int (*pipes)[2];
static volatile int go, stop;
static long writes, full;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void *writer(void *arg) {
    uint64_t s = 1; /* xorshift64, seed 1, as the Rust harness */
    long since_yield = 0;
    (void)arg;
    while (!__atomic_load_n(&go, __ATOMIC_ACQUIRE))
        sched_yield();
    while (!__atomic_load_n(&stop, __ATOMIC_RELAXED)) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        ssize_t w = write(pipes[s % (uint64_t)n][1], "x", 1);
        if (w == 1)
            writes++;
        else if (errno == EAGAIN)
            full++;
        if (++since_yield == n) {
            since_yield = 0;
            sched_yield();
        }
    }
    return NULL;
}

/* One notification: one read, counted if it returned data. */
static long reads, empty;
static void read_one(int i) {
    char buf[READ_BUF];
    ssize_t r = read(pipes[i][0], buf, sizeof buf);
    if (r > 0)
        reads++;
    else
        empty++;
}

static void fail(const char *what) {
    perror(what);
    exit(1);
}

/* One run of `seconds` for backend b; returns successful reads per second. */
static double run(int b, double seconds) {
    pipes = calloc((size_t)n, sizeof *pipes);
    for (int i = 0; i < n; i++)
        if (pipe2(pipes[i], O_NONBLOCK | O_CLOEXEC) < 0)
            fail("pipe2");
    int ep = -1, q = -1;
    unsigned ring_size = 1024;
    while (ring_size < 2u * (unsigned)n)
        ring_size *= 2;
    struct kevent_ring *ring = NULL;
    if (b < 2) {
        ep = epoll_create1(EPOLL_CLOEXEC);
        for (int i = 0; i < n; i++) {
            struct epoll_event e;
            e.events = EPOLLIN | (b == 1 ? EPOLLET : 0);
            e.data.u64 = (uint64_t)i;
            if (epoll_ctl(ep, EPOLL_CTL_ADD, pipes[i][0], &e) < 0)
                fail("epoll_ctl");
        }
    } else {
        ring = malloc(KEVENT_RING_BYTES(ring_size));
        q = kevent_init(ring, ring_size, 0);
        if (q < 0)
            fail("kevent_init");
        for (int i = 0; i < n; i++) {
            struct ukevent e;
            memset(&e, 0, sizeof e);
            e.id.raw[0] = (uint32_t)pipes[i][0];
            e.type = KEVENT_PIPE;
            e.event = KEVENT_PIPE_READ;
            e.req_flags = KEVENT_REQ_ALWAYS_QUEUE | (b == 3 ? KEVENT_REQ_ET : 0);
            e.user[0] = (uint32_t)i;
            if (kevent_ctl(q, KEVENT_CTL_ADD, 1, &e) != 0)
                fail("kevent_ctl");
        }
    }
    reads = empty = writes = full = 0;
    go = stop = 0;
    pthread_t w;
    pthread_create(&w, NULL, writer, NULL);
    static struct epoll_event evs[BATCH];
    unsigned uidx = 0, over = 0;
    struct timespec wait_ts = {0, 50000000}; /* the harness's wait timeout */
    double t0 = now();
    __atomic_store_n(&go, 1, __ATOMIC_RELEASE);
    while (now() - t0 < seconds) {
        if (b < 2) {
            int k = epoll_wait(ep, evs, BATCH, 50);
            for (int i = 0; i < k; i++)
                read_one((int)evs[i].data.u64);
        } else {
            int k = kevent_wait(q, BATCH, uidx, wait_ts, 0);
            if (k < 0)
                fail("kevent_wait");
            for (int i = 0; i < k; i++) {
                read_one((int)ring->event[uidx].user[0]);
                if (++uidx == ring_size) {
                    uidx = 0;
                    over++;
                }
            }
            if (k > 0 && kevent_commit(q, uidx, over) < 0)
                fail("kevent_commit");
        }
    }
    double elapsed = now() - t0;
    __atomic_store_n(&stop, 1, __ATOMIC_RELAXED);
    pthread_join(w, NULL);
    if (ep >= 0)
        close(ep);
    if (q >= 0) {
        kevent_close(q);
        free(ring);
    }
    for (int i = 0; i < n; i++) {
        close(pipes[i][0]);
        close(pipes[i][1]);
    }
    free(pipes);
    return (double)reads / elapsed;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    n = argc > 1 ? atoi(argv[1]) : 2000;
    double seconds = argc > 2 ? atof(argv[2]) : 0.5;
    int rounds = argc > 3 ? atoi(argv[3]) : 3;
    if (n < 1 || seconds <= 0 || rounds < 1 || rounds > 99) {
        fprintf(stderr, "usage: kevent_bench [streams [seconds [rounds]]]\n");
        return 2;
    }
    struct utsname u;
    uname(&u);
    char cpu[256] = "?";
    FILE *f = fopen("/proc/cpuinfo", "r");
    char line[256];
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "model name", 10) == 0) {
            char *c = strchr(line, ':');
            snprintf(cpu, sizeof cpu, "%s", c ? c + 2 : line);
            cpu[strcspn(cpu, "\n")] = 0;
            break;
        }
    if (f)
        fclose(f);
    printf("kevent_bench (C): epoll_bench workload, pipes, %d streams, 1 consumer, batch %d, "
           "%.2f s runs, %d rounds in rotation after a 0.5 s warm-up run each, 50 ms wait timeout\n",
           n, BATCH, seconds, rounds);
    printf("machine: %s, %ld CPUs, Linux %s\n", cpu, sysconf(_SC_NPROCESSORS_ONLN), u.release);
    double results[BACKENDS][99];
    for (int b = 0; b < BACKENDS; b++)
        run(b, 0.5); /* warm-up, discarded (the Rust harness's default, 0.5 s) */
    for (int r = 0; r < rounds; r++)
        for (int k = 0; k < BACKENDS; k++) {
            int b = (k + r) % BACKENDS;
            results[b][r] = run(b, seconds);
        }
    double median[BACKENDS];
    printf("\n%-10s %14s   %s\n", "backend", "events/s", "runs");
    for (int b = 0; b < BACKENDS; b++) {
        double sorted[99];
        memcpy(sorted, results[b], sizeof(double) * (size_t)rounds);
        qsort(sorted, (size_t)rounds, sizeof(double), cmp);
        median[b] = sorted[rounds / 2];
        printf("%-10s %14.0f  ", names[b], median[b]);
        for (int r = 0; r < rounds; r++)
            printf(" %.0f", results[b][r]);
        printf("\n");
    }
    printf("\nkevent-lt / epoll-lt %.2f   kevent-et / epoll-et %.2f   "
           "best kevent / best epoll %.2f\n",
           median[2] / median[0], median[3] / median[1],
           (median[2] > median[3] ? median[2] : median[3]) /
               (median[0] > median[1] ? median[0] : median[1]));
    return 0;
}
