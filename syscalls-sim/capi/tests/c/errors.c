/*
 * Every error a call answers, with the errno of kevent.h: EBADF, EINVAL, EFAULT (NULL,
 * misaligned, unmapped and read-only memory), EOVERFLOW (a stale commit from before a
 * wrap), EPIPE (a wait on a queue closed under it); the per-entry errors of
 * kevent_ctl (EEXIST, ENOSYS, EINVAL, EBADF, ENOENT in ret_data[1]); and the two early
 * returns of kevent_wait (a stale view, a full ring).
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>

#include <kevent.h>

#include "check.h"

static struct ukevent user_kevent(uint32_t id) {
    struct ukevent e;
    memset(&e, 0, sizeof e);
    e.id.raw[0] = id;
    e.type = KEVENT_USER;
    e.event = KEVENT_USER_READY;
    e.user[0] = id;
    return e;
}

static int closing_q;
static void *wait_on_closing(void *arg) {
    struct timespec forever = {KEVENT_TIMEOUT_INFINITE_SEC, 0};
    (void)arg;
    errno = 0;
    long r = kevent_wait(closing_q, 1, 0, forever, 0);
    return (void *)(r == -1 && errno == EPIPE ? 1L : 0L);
}

int main(void) {
    struct ukevent e, buf[8];
    static char mem[KEVENT_RING_BYTES(8)] __attribute__((aligned(8)));
    struct kevent_ring *ring = (struct kevent_ring *)mem;
    struct timespec zero = {0, 0};

    /* EINVAL at init: the 2006 rules for (ring, num), and flags. */
    FAILS(kevent_init(ring, 1, 0), EINVAL);
    FAILS(kevent_init(ring, 0, 0), EINVAL);
    FAILS(kevent_init(NULL, 8, 0), EINVAL);
    FAILS(kevent_init(NULL, 0, 1), EINVAL);
    FAILS(kevent_init(ring, KEVENT_MAX_RING_SIZE + 1u, 0), EINVAL);

    /* EFAULT: NULL, misaligned, a page without access, a read-only page. */
    char *none = (char *)mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    char *ro = (char *)mmap(NULL, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(none != MAP_FAILED && ro != MAP_FAILED, "mmap");
    FAILS(kevent_init((struct kevent_ring *)none, 8, 0), EFAULT);
    FAILS(kevent_init((struct kevent_ring *)ro, 8, 0), EFAULT);
    FAILS(kevent_init((struct kevent_ring *)(mem + 4), 2, 0), EFAULT);

    int q = kevent_init(ring, 8, 0);
    CHECK(q >= 0, "kevent_init");
    FAILS(kevent_ctl(q, KEVENT_CTL_ADD, 1, NULL), EFAULT);
    FAILS(kevent_ctl(q, KEVENT_CTL_ADD, 1, (struct ukevent *)none), EFAULT);
    FAILS(kevent_ctl(q, KEVENT_CTL_ADD, 1, (struct ukevent *)ro), EFAULT); /* written back */
    FAILS(kevent_ctl(q, KEVENT_CTL_ADD, 1, (struct ukevent *)(mem + 4)), EFAULT);
    FAILS(kevent_get_events(q, 1, 8, zero, NULL, 0), EFAULT);
    FAILS(kevent_get_events(q, 1, 8, zero, (struct ukevent *)ro, 0), EFAULT);
    FAILS(kevent_serve(q, NULL), EFAULT);

    /* EBADF: not a queue. */
    FAILS(kevent_ctl(-1, KEVENT_CTL_ADD, 0, NULL), EBADF);
    FAILS(kevent_ctl(0, KEVENT_CTL_ADD, 0, NULL), EBADF); /* an fd, but not a queue */
    FAILS(kevent_wait(12345, 1, 0, zero, 0), EBADF);
    FAILS(kevent_commit(12345, 0, 0), EBADF);
    FAILS(kevent_get_events(12345, 1, 8, zero, buf, 0), EBADF);
    FAILS(kevent_close(12345), EBADF);

    /* EINVAL: commands, counts, flags, timespecs, indices. */
    FAILS(kevent_ctl(q, 9, 0, NULL), EINVAL);
    FAILS(kevent_ctl(q, KEVENT_CTL_ADD, KEVENT_MAX_EVENTS + 1, buf), EINVAL);
    FAILS(kevent_wait(q, 0, 0, zero, 0), EINVAL);
    FAILS(kevent_wait(q, 1, 0, zero, 2), EINVAL);
    struct timespec bad = {0, 1000000000L};
    FAILS(kevent_wait(q, 1, 0, bad, 0), EINVAL);
    bad.tv_sec = -2;
    bad.tv_nsec = 0;
    FAILS(kevent_get_events(q, 1, 8, bad, buf, 0), EINVAL);
    FAILS(kevent_get_events(q, 1, 0, zero, buf, 0), EINVAL);
    FAILS(kevent_get_events(q, 3, 2, zero, buf, 0), EINVAL);
    FAILS(kevent_commit(q, 8, 0), EINVAL); /* not below the ring's size */
    FAILS(kevent_commit(q, 1, 0), EINVAL); /* beyond what kevent_wait copied in */

    /* Per entry, as in 2006: the call succeeds and says which entries failed. */
    struct ukevent add[5];
    add[0] = user_kevent(1);
    add[1] = user_kevent(1);        /* a duplicate (type, id) */
    add[2] = user_kevent(2);
    add[2].type = KEVENT_AIO;       /* not provided */
    add[3] = user_kevent(3);
    add[3].type = 77;               /* no such type */
    add[4] = user_kevent(4);
    add[4].type = KEVENT_PIPE;      /* fd 4000: not open */
    add[4].id.raw[0] = 4000;
    CHECK(kevent_ctl(q, KEVENT_CTL_ADD, 5, add) == 4, "4 entries written back");
    int want[4] = {EEXIST, ENOSYS, ENOSYS, EBADF};
    for (int i = 0; i < 4; i++)
        CHECK(add[i].ret_flags == (KEVENT_RET_BROKEN | KEVENT_RET_DONE) &&
                  (int)add[i].ret_data[1] == want[i],
              "entry %d: flags %#x errno %u, want %d", i, add[i].ret_flags, add[i].ret_data[1],
              want[i]);
    e = user_kevent(99);
    CHECK(kevent_ctl(q, KEVENT_CTL_REMOVE, 1, &e) == 1 && e.ret_data[1] == ENOENT, "ENOENT");

    /* EOVERFLOW: a commit from before the ring's last wrap. One user kevent, made ready
     * and taken eight times: the user index goes round the ring of 8 once. */
    unsigned uidx = 0, over = 0;
    e = user_kevent(1);
    for (int i = 0; i < 8; i++) {
        OK(kevent_ctl(q, KEVENT_CTL_READY, 1, &e));
        CHECK(kevent_wait(q, 1, uidx, ms(2000), 0) == 1, "take %d", i);
        CHECK(ring->event[uidx].id.raw[0] == 1, "entry");
        if (++uidx == 8) {
            uidx = 0;
            over++;
        }
        CHECK(kevent_commit(q, uidx, over) == 1, "commit %d", i);
    }
    CHECK(uidx == 0 && over == 1 && ring->ring_kidx == 0 && ring->ring_over == 1, "wrapped");
    CHECK(kevent_commit(q, 0, 1) == 0, "a repeated commit commits nothing");
    FAILS(kevent_commit(q, 6, 0), EOVERFLOW);

    /* A stale view returns at once, with an event ready; so does a full ring. */
    OK(kevent_ctl(q, KEVENT_CTL_READY, 1, &e));
    uint64_t t0 = now_ns(CLOCK_MONOTONIC);
    CHECK(kevent_wait(q, 1, 3, ms(2000), 0) == 0, "stale view");
    CHECK(now_ns(CLOCK_MONOTONIC) - t0 < 1000000000u, "a stale view slept");
    struct ukevent more[8];
    for (int i = 0; i < 8; i++)
        more[i] = user_kevent((uint32_t)(10 + i));
    CHECK(kevent_ctl(q, KEVENT_CTL_ADD, 8, more) == 0, "ADD");
    CHECK(kevent_ctl(q, KEVENT_CTL_READY, 8, more) == 0, "READY");
    int got = 0;
    while (got < 8) {
        int n = kevent_wait(q, 8, uidx, ms(2000), 0);
        CHECK(n > 0, "kevent_wait");
        got += n; /* not committed: the ring fills */
    }
    t0 = now_ns(CLOCK_MONOTONIC);
    CHECK(kevent_wait(q, 1, uidx, ms(2000), 0) == 0, "a full ring");
    CHECK(now_ns(CLOCK_MONOTONIC) - t0 < 1000000000u, "a full ring slept");
    CHECK(kevent_commit(q, uidx, over + 1) == 8, "commit the full ring");
    OK(kevent_close(q));
    FAILS(kevent_close(q), EBADF);

    /* EPIPE: the queue is closed while a thread sleeps in kevent_wait. */
    closing_q = kevent_init(ring, 8, 0);
    CHECK(closing_q >= 0, "kevent_init");
    pthread_t t;
    OK(pthread_create(&t, NULL, wait_on_closing, NULL));
    usleep(100000);
    OK(kevent_close(closing_q));
    void *epipe;
    OK(pthread_join(t, &epipe));
    CHECK(epipe == (void *)1L, "the waiter did not get EPIPE");

    munmap(none, 4096);
    munmap(ro, 4096);
    printf("errors: EBADF, EINVAL, EFAULT, EOVERFLOW, EPIPE; EEXIST, ENOSYS, EBADF, ENOENT "
           "per entry; a stale view and a full ring return 0 at once\n");
    return 0;
}
