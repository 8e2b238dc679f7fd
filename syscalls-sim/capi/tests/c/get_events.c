/*
 * kevent_get_events without a ring (kevent_init(NULL, 0, 0)), as lighttpd's back-end
 * used it: AF_UNIX socket pairs written by a thread, read by the main thread, every
 * byte accounted for; min honoured (the original ignored it); relative, absolute and
 * zero timeouts; ADD returning an already readable socket instead of queueing it.
 *
 *   get_events [pairs [bytes]]       (defaults: 32 pairs, 1,000,000 bytes)
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

#include <kevent.h>

#include "check.h"

static int npairs = 32;
static long total = 1000000;
static int (*pairs)[2];

static void *writer(void *arg) {
    uint64_t seed = 0x9e3779b97f4a7c15ull;
    char buf[128];
    long left = total;
    (void)arg;
    memset(buf, 'g', sizeof buf);
    while (left > 0) {
        int p = (int)(xorshift(&seed) % (uint64_t)npairs);
        long len = 1 + (long)(xorshift(&seed) % sizeof buf);
        if (len > left)
            len = left;
        ssize_t w = write(pairs[p][1], buf, (size_t)len);
        CHECK(w > 0, "write");
        left -= w;
    }
    return NULL;
}

static struct ukevent socket_kevent(int fd, uint32_t cookie, uint32_t flags) {
    struct ukevent e;
    memset(&e, 0, sizeof e);
    e.id.raw[0] = (uint32_t)fd;
    e.type = KEVENT_SOCKET;
    e.event = KEVENT_SOCKET_RECV;
    e.req_flags = flags;
    e.user[0] = cookie;
    return e;
}

int main(int argc, char **argv) {
    if (argc > 1)
        npairs = atoi(argv[1]);
    if (argc > 2)
        total = atol(argv[2]);
    int q = kevent_init(NULL, 0, 0);
    CHECK(q >= 0, "kevent_init(NULL, 0, 0)");
    FAILS(kevent_wait(q, 1, 0, ms(0), 0), EINVAL); /* no ring to copy into */
    struct ukevent buf[64];

    /* Timeouts with nothing ready: zero, relative, absolute (CLOCK_REALTIME). */
    uint64_t t0 = now_ns(CLOCK_MONOTONIC);
    CHECK(kevent_get_events(q, 1, 64, ms(0), buf, 0) == 0, "zero timeout");
    CHECK(kevent_get_events(q, 0, 64, ms(5000), buf, 0) == 0, "min 0 does not block");
    CHECK(now_ns(CLOCK_MONOTONIC) - t0 < 1000000000u, "did not block");
    t0 = now_ns(CLOCK_MONOTONIC);
    CHECK(kevent_get_events(q, 1, 64, ms(50), buf, 0) == 0, "relative timeout");
    CHECK(now_ns(CLOCK_MONOTONIC) - t0 >= 50000000u, "returned early");
    uint64_t at = now_ns(CLOCK_REALTIME) + 50000000u;
    struct timespec abs_ts;
    abs_ts.tv_sec = (time_t)(at / 1000000000u);
    abs_ts.tv_nsec = (long)(at % 1000000000u);
    CHECK(kevent_get_events(q, 1, 64, abs_ts, buf, KEVENT_FLAGS_ABSTIME) == 0, "abstime");
    CHECK(now_ns(CLOCK_REALTIME) >= at, "returned before the absolute time");

    /* ADD answers for a socket that is readable at once (2006), unless ALWAYS_QUEUE. */
    int sp[2];
    OK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sp));
    OK(write(sp[1], "x", 1));
    struct ukevent ready = socket_kevent(sp[0], 7, 0);
    CHECK(kevent_ctl(q, KEVENT_CTL_ADD, 1, &ready) == 1, "ADD returns the ready socket");
    CHECK(ready.ret_flags == KEVENT_RET_DONE && ready.user[0] == 7, "ret_flags %#x",
          ready.ret_flags);
    OK(kevent_ctl(q, KEVENT_CTL_REMOVE, 1, &ready));
    ready = socket_kevent(sp[0], 8, KEVENT_REQ_ALWAYS_QUEUE | KEVENT_REQ_ET);
    CHECK(kevent_ctl(q, KEVENT_CTL_ADD, 1, &ready) == 0, "ALWAYS_QUEUE queues it");
    CHECK(kevent_get_events(q, 1, 64, ms(1000), buf, 0) == 1 && buf[0].user[0] == 8, "queued");
    /* min: one event ready (a new edge), two asked for: the call waits out its timeout
     * and returns the one. */
    OK(write(sp[1], "y", 1));
    t0 = now_ns(CLOCK_MONOTONIC);
    int n = kevent_get_events(q, 2, 64, ms(60), buf, 0);
    CHECK(n == 1 && buf[0].user[0] == 8, "min 2 with one ready gave %d", n);
    CHECK(now_ns(CLOCK_MONOTONIC) - t0 >= 60000000u, "min 2 returned before the timeout");
    OK(kevent_ctl(q, KEVENT_CTL_REMOVE, 1, &ready));
    close(sp[0]);
    close(sp[1]);

    /* The workload: every byte written is read once. */
    pairs = (int (*)[2])calloc((size_t)npairs, sizeof *pairs);
    for (int i = 0; i < npairs; i++) {
        OK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, pairs[i]));
        struct ukevent e = socket_kevent(pairs[i][0], (uint32_t)i, 0);
        CHECK(kevent_ctl(q, KEVENT_CTL_ADD, 1, &e) == 0, "ADD");
    }
    pthread_t w;
    OK(pthread_create(&w, NULL, writer, NULL));
    long bytes = 0, events = 0, calls = 0;
    uint64_t deadline = now_ns(CLOCK_MONOTONIC) + 60ull * 1000000000u;
    char data[4096];
    while (bytes < total) {
        CHECK(now_ns(CLOCK_MONOTONIC) < deadline, "read %ld of %ld bytes in 60 s", bytes, total);
        n = kevent_get_events(q, 1, 64, ms(1000), buf, 0);
        CHECK(n >= 0, "kevent_get_events");
        calls++;
        for (int i = 0; i < n; i++) {
            CHECK(buf[i].type == KEVENT_SOCKET && buf[i].user[0] < (uint32_t)npairs, "entry");
            ssize_t r;
            while ((r = read(pairs[buf[i].user[0]][0], data, sizeof data)) > 0)
                bytes += r;
            CHECK(r < 0 && errno == EAGAIN, "read");
            events++;
        }
    }
    OK(pthread_join(w, NULL));
    CHECK(bytes == total, "written %ld, read %ld", total, bytes);
    /* Entries published before their bytes were read by an earlier entry's reads may
     * still come (level-triggered readiness seen then); each finds its socket empty. */
    while ((n = kevent_get_events(q, 1, 64, ms(50), buf, 0)) > 0)
        for (int i = 0; i < n; i++)
            CHECK(read(pairs[buf[i].user[0]][0], data, sizeof data) < 0 && errno == EAGAIN,
                  "socket %u has bytes nobody wrote", buf[i].user[0]);
    CHECK(n == 0, "kevent_get_events");
    OK(kevent_close(q));
    printf("get_events: %d socket pairs, %ld bytes written and read, %ld events in %ld calls\n",
           npairs, bytes, events, calls);
    for (int i = 0; i < npairs; i++) {
        close(pairs[i][0]);
        close(pairs[i][1]);
    }
    free(pairs);
    return 0;
}
