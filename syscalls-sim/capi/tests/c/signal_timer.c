/*
 * A signal kevent and timer kevents, as in the author's take26 test programs:
 *   - SIGUSR1 with KEVENT_SIGNAL_NOMASK, raised 20 times, each arrival reported once
 *     (ret_data[0] counts arrivals) and never delivered the usual way;
 *   - a POSIX timer (KEVENT_POSIX_TIMER, an absolute CLOCK_REALTIME time): fires once,
 *     not early;
 *   - a periodic KEVENT_TIMER of 10 ms: the expirations counted in ret_data over
 *     ~200 ms are the ones the clock says elapsed;
 *   - EINTR: a signal sent to the thread asleep in kevent_wait ends the wait.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <kevent.h>

#include "check.h"

#define RING 64

static volatile sig_atomic_t usr1_handled, usr2_handled;
static void on_usr1(int sig) {
    (void)sig;
    usr1_handled++;
}
static void on_usr2(int sig) {
    (void)sig;
    usr2_handled++;
}

static void install(int sig, void (*handler)(int), int flags) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = handler;
    sa.sa_flags = flags;
    sigemptyset(&sa.sa_mask);
    OK(sigaction(sig, &sa, NULL));
}

static struct kevent_ring *ring;
static unsigned int uidx, over;

/* Waits for one entry in the ring, copies it out, and commits it. */
static int take_one(int q, struct ukevent *out, long timeout_ms) {
    int n = kevent_wait(q, 1, uidx, ms(timeout_ms), 0);
    if (n <= 0)
        return n;
    *out = ring->event[uidx];
    if (++uidx == RING) {
        uidx = 0;
        over++;
    }
    CHECK(kevent_commit(q, uidx, over) == 1, "kevent_commit");
    return 1;
}

static pthread_t sleeper;
static void *interrupter(void *arg) {
    (void)arg;
    usleep(50000);
    pthread_kill(sleeper, SIGUSR2); /* to the thread asleep in kevent_wait, not the process */
    return NULL;
}

int main(void) {
    ring = (struct kevent_ring *)malloc(KEVENT_RING_BYTES(RING));
    int q = kevent_init(ring, RING, 0);
    CHECK(q >= 0, "kevent_init");
    struct ukevent e;

    /* Signal, NOMASK: only through the queue. */
    install(SIGUSR1, on_usr1, SA_RESTART);
    struct ukevent sig;
    memset(&sig, 0, sizeof sig);
    sig.id.raw_u64 = (uint64_t)SIGUSR1 | KEVENT_SIGNAL_NOMASK;
    sig.type = KEVENT_SIGNAL;
    sig.event = KEVENT_SIGNAL_DELIVERY;
    sig.user[0] = 1;
    CHECK(kevent_ctl(q, KEVENT_CTL_ADD, 1, &sig) == 0, "ADD signal");
    unsigned arrivals = 0;
    for (int i = 0; i < 20; i++) {
        OK(kill(getpid(), SIGUSR1));
        CHECK(take_one(q, &e, 2000) == 1, "signal %d not reported", i);
        CHECK(e.type == KEVENT_SIGNAL && e.user[0] == 1 && e.event == KEVENT_SIGNAL_DELIVERY,
              "entry");
        arrivals += e.ret_data[0];
    }
    CHECK(arrivals == 20, "20 signals raised, %u arrivals reported", arrivals);
    CHECK(take_one(q, &e, 50) == 0, "a 21st report");
    CHECK(usr1_handled == 0, "NOMASK: the handler ran %d times", (int)usr1_handled);
    OK(kevent_ctl(q, KEVENT_CTL_REMOVE, 1, &sig));

    /* POSIX timer: an absolute CLOCK_REALTIME time, 30 ms from now. */
    uint64_t at = now_ns(CLOCK_REALTIME) + 30000000u;
    struct ukevent pt;
    memset(&pt, 0, sizeof pt);
    pt.id.raw_u64 = at;
    pt.type = KEVENT_POSIX_TIMER;
    pt.event = KEVENT_TIMER_FIRED;
    pt.user[0] = 2;
    CHECK(kevent_ctl(q, KEVENT_CTL_ADD, 1, &pt) == 0, "ADD posix timer");
    CHECK(take_one(q, &e, 2000) == 1, "the POSIX timer did not fire");
    CHECK(now_ns(CLOCK_REALTIME) >= at, "fired early");
    CHECK(e.type == KEVENT_POSIX_TIMER && e.user[0] == 2 && e.event == KEVENT_TIMER_FIRED,
          "entry");
    CHECK(take_one(q, &e, 100) == 0, "a POSIX timer fires once");
    OK(kevent_ctl(q, KEVENT_CTL_REMOVE, 1, &pt));

    /* Periodic timer: 10 ms. */
    struct ukevent tm;
    memset(&tm, 0, sizeof tm);
    tm.id.raw_u64 = 10000000u;
    tm.type = KEVENT_TIMER;
    tm.event = KEVENT_TIMER_FIRED;
    tm.user[0] = 3;
    uint64_t t0 = now_ns(CLOCK_MONOTONIC);
    CHECK(kevent_ctl(q, KEVENT_CTL_ADD, 1, &tm) == 0, "ADD timer");
    uint64_t fired = 0;
    while (now_ns(CLOCK_MONOTONIC) - t0 < 200000000u) {
        if (take_one(q, &e, 100) == 1) {
            CHECK(e.type == KEVENT_TIMER && e.user[0] == 3, "entry");
            fired += e.ret_data[0] | (uint64_t)e.ret_data[1] << 32;
        }
    }
    OK(kevent_ctl(q, KEVENT_CTL_REMOVE, 1, &tm));
    uint64_t elapsed = (now_ns(CLOCK_MONOTONIC) - t0) / 10000000u;
    /* Expirations reported: those that elapsed, but for the last, possibly still
     * pending when the timer was removed. */
    CHECK(fired <= elapsed && fired + 2 >= elapsed, "%llu expirations in %llu periods",
          (unsigned long long)fired, (unsigned long long)elapsed);

    /* EINTR: no SA_RESTART. */
    install(SIGUSR2, on_usr2, 0);
    sleeper = pthread_self();
    pthread_t t;
    OK(pthread_create(&t, NULL, interrupter, NULL));
    t0 = now_ns(CLOCK_MONOTONIC);
    FAILS(kevent_wait(q, 1, uidx, ms(5000), 0), EINTR);
    CHECK(now_ns(CLOCK_MONOTONIC) - t0 < 2000000000u, "EINTR came late");
    CHECK(usr2_handled == 1, "the handler ran %d times", (int)usr2_handled);
    OK(pthread_join(t, NULL));

    OK(kevent_close(q));
    free(ring);
    printf("signal_timer: 20 of 20 signals reported (0 delivered the usual way), a POSIX "
           "timer fired once, %llu of %llu periodic expirations, EINTR\n",
           (unsigned long long)fired, (unsigned long long)elapsed);
    return 0;
}
