/*
 * Sharing a queue by name: the owner serves it on a Unix socket (kevent_serve); a
 * forked child does not use the handle it inherited but attaches through the path
 * (kevent_connect) with a ring of its own, adds a kevent of its own (its own pipe:
 * the id is its fd number in its process), and takes the owner's 100 user events and
 * its own pipe's event, each exactly once. The child cannot touch the owner's kevents
 * (ENOENT per entry). Then the connect errors: ENOENT for no such path, ETIMEDOUT for a
 * socket nobody answers on (after 5 s), and ENOENT once the queue closed (its socket file goes with it).
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <kevent.h>

#include "check.h"

#define RING 64
#define N 100

static char path[108];

static int child(int ready_fd) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    static char mem[KEVENT_RING_BYTES(32)] __attribute__((aligned(8)));
    struct kevent_ring *ring = (struct kevent_ring *)mem;
    int h = kevent_connect(path, ring, 32);
    CHECK(h >= 0, "kevent_connect(%s)", path);
    /* Its own kevent: a pipe of its own, readable. */
    int p[2];
    OK(pipe2(p, O_NONBLOCK));
    OK(write(p[1], "c", 1));
    struct ukevent own;
    memset(&own, 0, sizeof own);
    own.id.raw[0] = (uint32_t)p[0];
    own.type = KEVENT_PIPE;
    own.event = KEVENT_PIPE_READ;
    own.req_flags = KEVENT_REQ_ALWAYS_QUEUE | KEVENT_REQ_ET;
    own.user[0] = 0xc0ffee;
    CHECK(kevent_ctl(h, KEVENT_CTL_ADD, 1, &own) == 0, "the child's ADD");
    /* The owner's kevents are not the child's to mark ready. */
    struct ukevent theirs;
    memset(&theirs, 0, sizeof theirs);
    theirs.id.raw[0] = 5;
    theirs.type = KEVENT_USER;
    CHECK(kevent_ctl(h, KEVENT_CTL_READY, 1, &theirs) == 1, "READY of another's kevent");
    CHECK(theirs.ret_flags & KEVENT_RET_BROKEN && theirs.ret_data[1] == ENOENT, "ENOENT");
    CHECK(write(ready_fd, "r", 1) == 1, "ready");

    static int seen[N + 1];
    int mine = 0, total = 0;
    unsigned uidx = 0, over = 0;
    uint64_t deadline = now_ns(CLOCK_MONOTONIC) + 20ull * 1000000000u;
    while (total < N + 1) {
        CHECK(now_ns(CLOCK_MONOTONIC) < deadline, "%d of %d events in 20 s", total, N + 1);
        int n = kevent_wait(h, 16, uidx, ms(500), 0);
        CHECK(n >= 0, "kevent_wait");
        for (int i = 0; i < n; i++) {
            struct ukevent *e = &ring->event[uidx];
            if (e->type == KEVENT_PIPE) {
                CHECK(e->user[0] == 0xc0ffee && e->id.raw[0] == (uint32_t)p[0], "own entry");
                mine++;
            } else {
                CHECK(e->type == KEVENT_USER && e->id.raw[0] >= 1 && e->id.raw[0] <= N, "entry");
                CHECK(!seen[e->id.raw[0]]++, "user event %u twice", e->id.raw[0]);
            }
            total++;
            if (++uidx == 32) {
                uidx = 0;
                over++;
            }
        }
        if (n > 0)
            CHECK(kevent_commit(h, uidx, over) == n, "kevent_commit");
    }
    CHECK(mine == 1, "own pipe reported %d times", mine);
    CHECK(kevent_wait(h, 16, uidx, ms(100), 0) == 0, "an event too many");
    OK(kevent_ctl(h, KEVENT_CTL_REMOVE, 1, &own));
    OK(kevent_close(h));
    return 0;
}

int main(void) {
    snprintf(path, sizeof path, "/tmp/kevent-share-%d.sock", (int)getpid());
    unlink(path);
    struct kevent_ring *ring = (struct kevent_ring *)malloc(KEVENT_RING_BYTES(RING));
    int q = kevent_init(ring, RING, 0);
    CHECK(q >= 0, "kevent_init");
    OK(kevent_serve(q, path));
    FAILS(kevent_serve(q, path), EADDRINUSE);
    static struct ukevent ev[N];
    for (int i = 0; i < N; i++) {
        ev[i].id.raw[0] = (uint32_t)(i + 1);
        ev[i].type = KEVENT_USER;
        ev[i].event = KEVENT_USER_READY;
        ev[i].user[0] = (uint32_t)(i + 1);
    }
    CHECK(kevent_ctl(q, KEVENT_CTL_ADD, N, ev) == 0, "ADD");
    int ready[2];
    OK(pipe(ready));
    pid_t pid = fork();
    OK(pid);
    if (pid == 0)
        _exit(child(ready[1]));
    close(ready[1]);
    char c;
    CHECK(read(ready[0], &c, 1) == 1, "the child did not get ready");
    CHECK(kevent_ctl(q, KEVENT_CTL_READY, N, ev) == 0, "READY");
    int status;
    CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0,
          "the connected child failed (status %d)", status);

    /* Connect errors. */
    FAILS(kevent_connect("/tmp/kevent-no-such-queue.sock", NULL, 0), ENOENT);
    FAILS(kevent_connect(NULL, NULL, 0), EFAULT);
    char silent[108];
    snprintf(silent, sizeof silent, "/tmp/kevent-silent-%d.sock", (int)getpid());
    unlink(silent);
    int s = socket(AF_UNIX, SOCK_SEQPACKET, 0);
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    strcpy(sa.sun_path, silent);
    OK(bind(s, (struct sockaddr *)&sa, sizeof sa));
    OK(listen(s, 8)); /* and never accepts, never answers */
    uint64_t t0 = now_ns(CLOCK_MONOTONIC);
    FAILS(kevent_connect(silent, NULL, 0), ETIMEDOUT);
    double waited = (double)(now_ns(CLOCK_MONOTONIC) - t0) / 1e9;
    close(s);
    unlink(silent);

    OK(kevent_close(q));
    FAILS(kevent_connect(path, NULL, 0), ENOENT); /* the socket file went with the queue */
    free(ring);
    printf("share: a connected child took %d user events and its own pipe's event, each once; "
           "connect: ENOENT, EFAULT, ETIMEDOUT after %.1f s\n",
           N, waited);
    return 0;
}
