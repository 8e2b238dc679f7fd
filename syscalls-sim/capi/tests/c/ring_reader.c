/*
 * The ring reader of the 2006 test program: N pipes, a writer thread writing random
 * bytes into random pipes, and a reader that sleeps in kevent_wait, reads the entries
 * the call copied into its ring (event[uidx] onwards, modulo the ring's size) and gives
 * them back with kevent_commit(new_uidx, over). Exact accounting: every byte written is
 * read, and the ring's indices are what the original's were (ring_kidx = uidx + n).
 *
 *   ring_reader [pipes [bytes]]      (defaults: 64 pipes, 2,000,000 bytes)
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <unistd.h>

#include <kevent.h>

#include "check.h"

#define RING 200 /* not a power of two: the ring is the program's, of the size it asks */
#define BATCH 64

static int npipes = 64;
static long total = 2000000;
static int (*pipes)[2];
static volatile long written;

static void *writer(void *arg) {
    uint64_t seed = 88172645463325252ull;
    char buf[64];
    long left = total;
    (void)arg;
    memset(buf, 'k', sizeof buf);
    while (left > 0) {
        int p = (int)(xorshift(&seed) % (uint64_t)npipes);
        long len = 1 + (long)(xorshift(&seed) % sizeof buf);
        if (len > left)
            len = left;
        ssize_t w = write(pipes[p][1], buf, (size_t)len);
        if (w < 0 && errno == EAGAIN) {
            sched_yield(); /* that pipe is full: the reader is behind */
            continue;
        }
        CHECK(w > 0, "write");
        left -= w;
        __atomic_store_n(&written, total - left, __ATOMIC_RELEASE);
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc > 1)
        npipes = atoi(argv[1]);
    if (argc > 2)
        total = atol(argv[2]);
    struct kevent_ring *ring = (struct kevent_ring *)malloc(KEVENT_RING_BYTES(RING));
    CHECK(ring != NULL, "malloc");
    int q = kevent_init(ring, RING, 0);
    CHECK(q >= 0, "kevent_init");
    CHECK(ring->ring_kidx == 0 && ring->ring_over == 0, "a new ring starts at 0");

    pipes = (int (*)[2])calloc((size_t)npipes, sizeof *pipes);
    struct ukevent *add = (struct ukevent *)calloc((size_t)npipes, sizeof *add);
    for (int i = 0; i < npipes; i++) {
        OK(pipe2(pipes[i], O_NONBLOCK | O_CLOEXEC));
        add[i].id.raw[0] = (uint32_t)pipes[i][0];
        add[i].type = KEVENT_PIPE;
        add[i].event = KEVENT_PIPE_READ;
        add[i].user[0] = (uint32_t)i;
    }
    CHECK(kevent_ctl(q, KEVENT_CTL_ADD, (unsigned)npipes, add) == 0,
          "empty pipes are registered, none ready at once");

    pthread_t w;
    OK(pthread_create(&w, NULL, writer, NULL));

    unsigned int uidx = 0, over = 0;
    long bytes = 0, events = 0, waits = 0;
    uint64_t deadline = now_ns(CLOCK_MONOTONIC) + 60ull * 1000000000u;
    char buf[4096];
    while (bytes < total) {
        CHECK(now_ns(CLOCK_MONOTONIC) < deadline, "read %ld of %ld bytes in 60 s", bytes, total);
        int n = kevent_wait(q, BATCH, uidx, ms(1000), 0);
        CHECK(n >= 0, "kevent_wait");
        waits++;
        CHECK(n <= BATCH, "kevent_wait copied %d > %d", n, BATCH);
        CHECK(ring->ring_kidx == (uidx + (unsigned)n) % RING, "ring_kidx %u, uidx %u, n %d",
              ring->ring_kidx, uidx, n);
        for (int i = 0; i < n; i++) {
            struct ukevent *e = &ring->event[uidx];
            CHECK(e->type == KEVENT_PIPE && e->user[0] < (uint32_t)npipes &&
                      e->id.raw[0] == (uint32_t)pipes[e->user[0]][0],
                  "entry %u: type %u id %u cookie %u", uidx, e->type, e->id.raw[0], e->user[0]);
            CHECK(e->event & KEVENT_PIPE_READ, "event %#x", e->event);
            ssize_t r;
            while ((r = read((int)e->id.raw[0], buf, sizeof buf)) > 0)
                bytes += r;
            CHECK(r < 0 && errno == EAGAIN, "read");
            events++;
            if (++uidx == RING) {
                uidx = 0;
                over++;
            }
        }
        if (n > 0) {
            CHECK(ring->ring_kidx == uidx && ring->ring_over == over, "ring_over %u, over %u",
                  ring->ring_over, over);
            int c = kevent_commit(q, uidx, over);
            CHECK(c == n, "kevent_commit committed %d of %d", c, n);
        }
    }
    OK(pthread_join(w, NULL));
    CHECK(bytes == total && written == total, "written %ld, read %ld", written, bytes);
    /* Entries published before their bytes were read by an earlier entry's reads may
     * still come (level-triggered readiness seen then); each finds its pipe empty. */
    int n;
    while ((n = kevent_wait(q, BATCH, uidx, ms(50), 0)) > 0) {
        for (int i = 0; i < n; i++) {
            struct ukevent *e = &ring->event[uidx];
            CHECK(read((int)e->id.raw[0], buf, sizeof buf) < 0 && errno == EAGAIN,
                  "pipe %u has bytes nobody wrote", e->user[0]);
            if (++uidx == RING) {
                uidx = 0;
                over++;
            }
        }
        CHECK(kevent_commit(q, uidx, over) == n, "kevent_commit");
    }
    CHECK(n == 0, "kevent_wait");

    for (int i = 0; i < npipes; i++) {
        OK(kevent_ctl(q, KEVENT_CTL_REMOVE, 1, &add[i]));
        close(pipes[i][0]);
        close(pipes[i][1]);
    }
    OK(kevent_close(q));
    FAILS(kevent_wait(q, 1, uidx, ms(0), 0), EBADF);
    printf("ring_reader: %d pipes, %ld bytes written and read, %ld entries in %ld waits, "
           "ring of %d wrapped %u times\n",
           npipes, bytes, events, waits, RING, over);
    free(add);
    free(pipes);
    free(ring);
    return 0;
}
