/*
 * A parent and two forked children sharing one queue. The parent registers 256 user
 * kevents and makes them all ready; the children consume them over their own rings
 * (kevent_wait / kevent_commit on the inherited handle: each child's first call attaches
 * it as a consumer of its own). Child A commits two batches and is SIGKILLed holding its
 * third; child B then takes everything else, and A's held entries come to it again,
 * flagged KEVENT_RET_REDELIVERED. Exact accounting: every kevent is committed exactly
 * once (by A before its death, or by B), and B's redelivered entries are exactly the
 * batch A held.
 */
#define _GNU_SOURCE
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <kevent.h>

#include "check.h"

#define RING 64
#define M 256

enum { TAKEN = 1, COMMITTED = 2, HOLDING = 3 };

struct record { /* what a child tells the parent; one write each, atomic (< PIPE_BUF) */
    uint32_t who, kind, id, flags;
};

static int q, rep[2], go[2], stop[2];
static struct kevent_ring *ring;

static void tell(uint32_t who, uint32_t kind, uint32_t id, uint32_t flags) {
    struct record r;
    r.who = who;
    r.kind = kind;
    r.id = id;
    r.flags = flags;
    CHECK(write(rep[1], &r, sizeof r) == (ssize_t)sizeof r, "report");
}

/* A child's loop: batches of `batch` from its own ring; child 'A' holds its third. */
static void child(uint32_t who, unsigned batch) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    close(rep[0]); /* the parent's ends: stop's EOF must come when the parent closes it */
    close(go[1]);
    close(stop[1]);
    unsigned int uidx = 0, over = 0, batches = 0;
    if (who == 'B') {
        char c;
        CHECK(read(go[0], &c, 1) == 1, "go");
    }
    for (;;) {
        struct pollfd p;
        p.fd = stop[0];
        p.events = POLLIN;
        if (who == 'B' && poll(&p, 1, 0) == 1)
            _exit(0);
        int n = kevent_wait(q, batch, uidx, ms(100), 0);
        CHECK(n >= 0, "child %c: kevent_wait", who);
        if (n == 0)
            continue;
        /* A forked child's ring starts empty, at 0 (the parent's claims are not its). */
        CHECK(ring->ring_kidx == (uidx + (unsigned)n) % RING, "child ring_kidx");
        for (int i = 0; i < n; i++) {
            struct ukevent *e = &ring->event[uidx];
            CHECK(e->type == KEVENT_USER && e->user[0] == e->id.raw[0], "entry");
            tell(who, TAKEN, e->id.raw[0], e->ret_flags);
            if (++uidx == RING) {
                uidx = 0;
                over++;
            }
        }
        if (who == 'A' && ++batches == 3) {
            tell(who, HOLDING, 0, 0);
            for (;;)
                pause(); /* killed here, holding the batch */
        }
        CHECK(kevent_commit(q, uidx, over) == n, "child %c: kevent_commit", who);
        tell(who, COMMITTED, 0, 0);
    }
}

int main(void) {
    ring = (struct kevent_ring *)malloc(KEVENT_RING_BYTES(RING));
    q = kevent_init(ring, RING, 0);
    CHECK(q >= 0, "kevent_init");
    OK(pipe(rep));
    OK(pipe(go));
    OK(pipe(stop));
    static struct ukevent ev[M];
    for (int i = 0; i < M; i++) {
        ev[i].id.raw[0] = (uint32_t)(i + 1);
        ev[i].type = KEVENT_USER;
        ev[i].event = KEVENT_USER_READY;
        ev[i].user[0] = (uint32_t)(i + 1);
    }
    CHECK(kevent_ctl(q, KEVENT_CTL_ADD, M, ev) == 0, "ADD");

    pid_t a = fork();
    OK(a);
    if (a == 0)
        child('A', 4);
    pid_t b = fork();
    OK(b);
    if (b == 0)
        child('B', 8);

    close(rep[1]);
    close(go[0]);
    close(stop[0]);
    CHECK(kevent_ctl(q, KEVENT_CTL_READY, M, ev) == 0, "READY");

    static int committed_by_a[M + 1], taken_by_b[M + 1], redelivered_to_b[M + 1];
    static int held[M + 1];
    int pending_a[8], npending = 0, nheld = 0, accounted = 0, a_committed = 0;
    uint64_t deadline = now_ns(CLOCK_MONOTONIC) + 30ull * 1000000000u;
    while (accounted < M) {
        CHECK(now_ns(CLOCK_MONOTONIC) < deadline, "%d of %d kevents accounted in 30 s",
              accounted, M);
        struct record r;
        CHECK(read(rep[0], &r, sizeof r) == (ssize_t)sizeof r, "read report");
        CHECK(r.kind == COMMITTED || r.kind == HOLDING || (r.id >= 1 && r.id <= M), "id");
        if (r.who == 'A') {
            if (r.kind == TAKEN) {
                CHECK(npending < 8, "A took more than its batch");
                CHECK(!(r.flags & KEVENT_RET_REDELIVERED), "A got a redelivered entry");
                pending_a[npending++] = (int)r.id;
            } else if (r.kind == COMMITTED) {
                for (int i = 0; i < npending; i++) {
                    CHECK(!committed_by_a[pending_a[i]]++, "A committed %d twice", pending_a[i]);
                    accounted++;
                    a_committed++;
                }
                npending = 0;
            } else {
                for (int i = 0; i < npending; i++)
                    held[pending_a[i]] = 1;
                nheld = npending;
                CHECK(nheld > 0, "A held nothing");
                OK(kill(a, SIGKILL));
                int status;
                CHECK(waitpid(a, &status, 0) == a && WIFSIGNALED(status), "A's death");
                CHECK(write(go[1], "g", 1) == 1, "go");
            }
        } else {
            CHECK(r.who == 'B', "who");
            if (r.kind != TAKEN)
                continue;
            CHECK(!taken_by_b[r.id]++, "B took %u twice", r.id);
            CHECK(!committed_by_a[r.id], "B took %u, which A had committed", r.id);
            if (r.flags & KEVENT_RET_REDELIVERED)
                redelivered_to_b[r.id] = 1;
            accounted++;
        }
    }
    /* Nothing more comes: B finds the queue empty until told to stop. */
    usleep(200000);
    CHECK(close(stop[1]) == 0, "stop");
    int status;
    CHECK(waitpid(b, &status, 0) == b && WIFEXITED(status) && WEXITSTATUS(status) == 0,
          "B exited with %d", status);
    /* Both children are gone: what is left in the pipe, up to its end, has no entry. */
    struct record r;
    ssize_t got;
    while ((got = read(rep[0], &r, sizeof r)) == (ssize_t)sizeof r)
        CHECK(r.kind != TAKEN, "an entry after all %d were accounted: %u", M, r.id);
    CHECK(got == 0, "read");
    int b_taken = 0, redelivered = 0;
    for (int id = 1; id <= M; id++) {
        CHECK(committed_by_a[id] + taken_by_b[id] == 1, "kevent %d: A %d, B %d", id,
              committed_by_a[id], taken_by_b[id]);
        CHECK(redelivered_to_b[id] == held[id], "kevent %d: held by A %d, redelivered %d", id,
              held[id], redelivered_to_b[id]);
        b_taken += taken_by_b[id];
        redelivered += redelivered_to_b[id];
    }
    OK(kevent_close(q));
    free(ring);
    printf("fork_share: %d kevents: %d committed by child A, A SIGKILLed holding %d, "
           "%d taken by child B of which %d redelivered (exactly A's held batch)\n",
           M, a_committed, nheld, b_taken, redelivered);
    return 0;
}
