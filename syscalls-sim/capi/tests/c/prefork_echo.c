/*
 * A small pre-forked echo server in the style of lighttpd's kevent back-end: after the
 * fork each worker process makes its own queue without a ring (kevent_init(NULL, 0, 0)),
 * registers the shared listening socket and its connections through a small fdevent
 * layer (add, del, poll, as lighttpd's fdevent_*.c back-ends are written), and serves
 * what kevent_get_events returns, level-triggered. The parent is the client: 32
 * connections, 20 messages each, every echo checked byte for byte. Exact accounting:
 * connections accepted and closed by the workers = connections made, bytes echoed =
 * bytes sent.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <kevent.h>

#include "check.h"

#define WORKERS 3
#define CONNS 32
#define MESSAGES 20

/* --- the fdevent layer: one queue per process, the handler context in the cookie --- */
struct fdevents {
    int q;
    struct ukevent ready[64];
};

static void fdevent_add(struct fdevents *ev, int fd, uint32_t type, uint32_t events,
                        void *ctx) {
    struct ukevent e;
    memset(&e, 0, sizeof e);
    e.id.raw[0] = (uint32_t)fd;
    e.type = type;
    e.event = events;
    e.req_flags = KEVENT_REQ_ALWAYS_QUEUE; /* lighttpd wanted every event from the queue */
    e.ptr = ctx;
    CHECK(kevent_ctl(ev->q, KEVENT_CTL_ADD, 1, &e) == 0, "fdevent_add fd %d", fd);
}

static void fdevent_del(struct fdevents *ev, int fd, uint32_t type) {
    struct ukevent e;
    memset(&e, 0, sizeof e);
    e.id.raw[0] = (uint32_t)fd;
    e.type = type;
    CHECK(kevent_ctl(ev->q, KEVENT_CTL_REMOVE, 1, &e) == 0 && !(e.ret_flags & KEVENT_RET_BROKEN),
          "fdevent_del fd %d", fd);
}

static int fdevent_poll(struct fdevents *ev, long timeout_ms) {
    int n = kevent_get_events(ev->q, 1, 64, ms(timeout_ms), ev->ready, 0);
    CHECK(n >= 0, "fdevent_poll");
    return n;
}

/* --- a worker --------------------------------------------------------------------- */
struct conn {
    int fd;
};
struct result {
    long accepted, closed, bytes;
};
static char LISTENER, CONTROL; /* their addresses are the cookies */

static void write_all(int fd, const char *p, size_t len) {
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w < 0 && errno == EAGAIN) {
            struct pollfd pf;
            pf.fd = fd;
            pf.events = POLLOUT;
            poll(&pf, 1, 1000);
            continue;
        }
        CHECK(w > 0, "echo write");
        p += w;
        len -= (size_t)w;
    }
}

static void worker(int listener, int control, int results) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    struct fdevents ev;
    ev.q = kevent_init(NULL, 0, 0);
    CHECK(ev.q >= 0, "worker kevent_init");
    fdevent_add(&ev, listener, KEVENT_SOCKET, KEVENT_SOCKET_ACCEPT, &LISTENER);
    fdevent_add(&ev, control, KEVENT_PIPE, KEVENT_PIPE_READ, &CONTROL);
    struct result res = {0, 0, 0};
    long open_conns = 0;
    int stopping = 0;
    char buf[4096];
    while (!stopping || open_conns > 0) {
        int n = fdevent_poll(&ev, 1000);
        for (int i = 0; i < n; i++) {
            void *ctx = ev.ready[i].ptr;
            if (ctx == &LISTENER) {
                int c;
                while ((c = accept4(listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
                    struct conn *conn = (struct conn *)malloc(sizeof *conn);
                    conn->fd = c;
                    fdevent_add(&ev, c, KEVENT_SOCKET, KEVENT_SOCKET_RECV, conn);
                    res.accepted++;
                    open_conns++;
                }
                /* Every worker's queue watches the listener, as in lighttpd: each is
                 * woken, one accepts, the others find nothing. */
                CHECK(errno == EAGAIN, "accept4");
            } else if (ctx == &CONTROL) {
                ssize_t r = read(control, buf, sizeof buf);
                CHECK(r == 0, "control");
                fdevent_del(&ev, control, KEVENT_PIPE);
                fdevent_del(&ev, listener, KEVENT_SOCKET);
                stopping = 1;
            } else {
                struct conn *conn = (struct conn *)ctx;
                ssize_t r;
                while ((r = read(conn->fd, buf, sizeof buf)) > 0) {
                    write_all(conn->fd, buf, (size_t)r);
                    res.bytes += r;
                }
                if (r == 0) { /* removed before it is closed: its number is reused */
                    fdevent_del(&ev, conn->fd, KEVENT_SOCKET);
                    close(conn->fd);
                    free(conn);
                    res.closed++;
                    open_conns--;
                } else {
                    CHECK(errno == EAGAIN, "read");
                }
            }
        }
    }
    OK(kevent_close(ev.q));
    CHECK(write(results, &res, sizeof res) == (ssize_t)sizeof res, "result");
    _exit(0);
}

/* --- the client --------------------------------------------------------------------- */
int main(void) {
    int listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    OK(listener);
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    OK(bind(listener, (struct sockaddr *)&addr, sizeof addr));
    OK(listen(listener, 128));
    socklen_t alen = sizeof addr;
    OK(getsockname(listener, (struct sockaddr *)&addr, &alen));
    int control[2], results[2];
    OK(pipe(control));
    OK(pipe(results));
    pid_t pids[WORKERS];
    for (int w = 0; w < WORKERS; w++) {
        pids[w] = fork();
        OK(pids[w]);
        if (pids[w] == 0) {
            close(control[1]);
            close(results[0]);
            worker(listener, control[0], results[1]);
        }
    }
    close(control[0]);
    close(results[1]);

    int conns[CONNS];
    for (int c = 0; c < CONNS; c++) {
        conns[c] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        OK(conns[c]);
        OK(connect(conns[c], (struct sockaddr *)&addr, sizeof addr));
        struct timeval tv = {10, 0}; /* a lost event fails the run instead of hanging it */
        OK(setsockopt(conns[c], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv));
    }
    uint64_t seed = 42;
    long sent = 0;
    static char out[1500], in[1500];
    for (int m = 0; m < MESSAGES; m++) {
        for (int c = 0; c < CONNS; c++) {
            size_t len = 1 + (size_t)(xorshift(&seed) % sizeof out);
            for (size_t i = 0; i < len; i++)
                out[i] = (char)('a' + (c + m + (int)i) % 26);
            CHECK(write(conns[c], out, len) == (ssize_t)len, "send");
            size_t got = 0;
            while (got < len) {
                ssize_t r = read(conns[c], in + got, len - got);
                CHECK(r > 0, "connection %d, message %d: echo after %zu of %zu bytes", c, m, got,
                      len);
                got += (size_t)r;
            }
            CHECK(memcmp(in, out, len) == 0, "connection %d, message %d: wrong bytes", c, m);
            sent += (long)len;
        }
    }
    for (int c = 0; c < CONNS; c++)
        close(conns[c]);
    close(control[1]); /* the workers stop once their connections are closed */

    struct result total = {0, 0, 0};
    for (int w = 0; w < WORKERS; w++) {
        struct result r;
        CHECK(read(results[0], &r, sizeof r) == (ssize_t)sizeof r, "a worker's result");
        total.accepted += r.accepted;
        total.closed += r.closed;
        total.bytes += r.bytes;
        printf("prefork_echo: a worker accepted %ld connections\n", r.accepted);
    }
    for (int w = 0; w < WORKERS; w++) {
        int status;
        CHECK(waitpid(pids[w], &status, 0) == pids[w] && WIFEXITED(status) &&
                  WEXITSTATUS(status) == 0,
              "worker %d exited with %d", w, status);
    }
    CHECK(total.accepted == CONNS && total.closed == CONNS, "accepted %ld, closed %ld of %d",
          total.accepted, total.closed, CONNS);
    CHECK(total.bytes == sent, "sent %ld, echoed %ld", sent, total.bytes);
    printf("prefork_echo: %d workers, %d connections x %d messages, %ld bytes echoed, every "
           "connection accepted once and closed\n",
           WORKERS, CONNS, MESSAGES, sent);
    return 0;
}
