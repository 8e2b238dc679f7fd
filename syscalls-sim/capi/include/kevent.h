/*
 * kevent.h: the kevent calls of Linux 2006 (take26-take30), from libkevent, a user-space
 * reimplementation (https://docs.rs/kevent; this repository's README, "kevent from C").
 *
 * Written by hand and checked, not generated: tests/c/layout.c compares the sizeof and
 * offsetof of every struct below, and the value of every KEVENT_* constant, with what
 * the library itself was compiled with (kevent_abi()), so the two cannot drift apart.
 *
 * Conventions of the original, kept: every call returns -1 and sets errno on failure;
 * timeouts are a struct timespec, relative, or absolute (CLOCK_REALTIME) with
 * KEVENT_FLAGS_ABSTIME; kevent_ctl reports per-entry failures in the entries themselves.
 *
 * Where this implementation differs from 2006, the comment says "differs:"; an addition
 * the original did not have says "ext:". The README lists them all.
 *
 * Errors (errno), for every call:
 *   EBADF      the handle is not a kevent queue of this process (closed, never one);
 *   EINVAL     a bad number, flag, command, index or timespec;
 *   EFAULT     a bad pointer: NULL, misaligned, or memory this process cannot read and
 *              write (checked before anything is done, as the kernel's copy would fail);
 *   EOVERFLOW  kevent_commit with a position from before the ring's last wrap;
 *   EINTR      a signal interrupted a wait;
 *   ETIMEDOUT  kevent_connect, or kevent_ctl of a process that is not the queue's owner:
 *              the owner did not answer within 5 s (a wait that times out returns 0);
 *   EPIPE      the queue was closed, or its owner died (ext: the original had no owner);
 *   EIO        the shared ring was found corrupt, or an internal error (a bug in the
 *              library, caught at the boundary: nothing unwinds into the caller);
 *   ENOSPC, EMFILE, ECONNRESET, ECONNREFUSED, EPERM, EOPNOTSUPP: sharing, see below.
 * EEXIST and ENOSYS are, as in 2006, per entry: kevent_ctl(ADD) writes the entry back
 * with KEVENT_RET_BROKEN and the errno in ret_data[1].
 */
#ifndef KEVENT_H
#define KEVENT_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>
/* struct timespec, also under a strict -std=c99 (whose <time.h> lacks it): glibc's and
 * musl's <sched.h> declare it whatever the feature macros. */
#include <sched.h>

#ifdef __cplusplus
extern "C" {
#endif

/* --- kevent_ctl commands ------------------------------------------------------------ */
#define KEVENT_CTL_ADD 0    /* register kevents */
#define KEVENT_CTL_REMOVE 1 /* unregister (looked up by type and id) */
#define KEVENT_CTL_MODIFY 2 /* change event, flags, cookie; re-enables a fired ONESHOT */
#define KEVENT_CTL_READY 3  /* mark kevents ready; with num == 0, wake one waiter */

/* --- event types (ukevent.type) ------------------------------------------------------ */
#define KEVENT_SOCKET 0      /* id.raw[0] = socket fd */
#define KEVENT_INODE 1       /* id.raw[0] = directory fd: entries created / removed */
#define KEVENT_TIMER 2       /* id.raw_u64 = period in ns (or delay, or time: see below) */
#define KEVENT_POLL 3        /* id.raw[0] = any pollable fd; event = KEVENT_POLL_* bits */
#define KEVENT_NAIO 4        /* not provided: ENOSYS per entry */
#define KEVENT_AIO 5         /* not provided: ENOSYS per entry */
#define KEVENT_PIPE 6        /* id.raw[0] = pipe or FIFO fd */
#define KEVENT_SIGNAL 7      /* id.raw[0] = signal number, see KEVENT_SIGNAL_NOMASK */
#define KEVENT_POSIX_TIMER 8 /* id.raw_u64 = expiry, CLOCK_REALTIME ns since the epoch */
#define KEVENT_USER 9        /* take30's private user events: made ready by READY */
#define KEVENT_MAX 10        /* types are below this */

/* --- request flags (ukevent.req_flags) ----------------------------------------------- */
#define KEVENT_REQ_ONESHOT 0x1      /* deliver once, then inactive until MODIFY */
#define KEVENT_REQ_WAKEUP_ALL 0x2   /* wake every waiter (default: one) */
#define KEVENT_REQ_ET 0x4           /* edge-triggered (default: level-triggered) */
#define KEVENT_REQ_LAST_CHECK 0x8   /* re-check readiness before a backlogged entry goes out */
#define KEVENT_REQ_ALWAYS_QUEUE 0x10 /* queue an fd ready at ADD instead of returning it */
#define KEVENT_REQ_ALL 0x1f         /* ext: every request flag this library knows */

/* --- return flags (ukevent.ret_flags) ------------------------------------------------ */
#define KEVENT_RET_BROKEN 0x1      /* the request failed; ret_data[1] is the errno */
#define KEVENT_RET_DONE 0x2        /* completed (or: ready at ADD, not queued) */
#define KEVENT_RET_COPY_FAILED 0x4 /* kept for the ABI; never set here */
#define KEVENT_RET_REDELIVERED 0x8 /* ext: delivered again, its first taker died or
                                      held it past its lease without committing */

/* --- events (ukevent.event) ---------------------------------------------------------- */
#define KEVENT_SOCKET_RECV 0x1   /* readable (sockets and pipes) */
#define KEVENT_SOCKET_ACCEPT 0x2 /* a listening socket has a connection */
#define KEVENT_SOCKET_SEND 0x4   /* writable (sockets and pipes) */
#define KEVENT_PIPE_READ KEVENT_SOCKET_RECV
#define KEVENT_PIPE_WRITE KEVENT_SOCKET_SEND
#define KEVENT_TIMER_FIRED 0x1    /* ret_data[0], ret_data[1]: expirations (low, high) */
#define KEVENT_TIMER_ONCE 0x100   /* ext: fire once after id.raw_u64 ns */
#define KEVENT_TIMER_ABSTIME 0x200 /* ext: id.raw_u64 is a CLOCK_MONOTONIC time, once */
#define KEVENT_INODE_CREATE 0x1
#define KEVENT_INODE_REMOVE 0x2
#define KEVENT_SIGNAL_DELIVERY 0x1 /* ret_data[0]: arrivals */
#define KEVENT_USER_READY 0x1      /* ext: the event a user kevent reports */
/* Top bit of id.raw_u64 of a KEVENT_SIGNAL: the signal is delivered only through the
 * queue, not the usual way. */
#define KEVENT_SIGNAL_NOMASK 0x8000000000000000ULL
/* KEVENT_POLL events are the poll(2) bits. ext: an fd kevent's entry also carries the
 * poll(2) bits seen in ret_data[1] (a hang-up or an error told from data). */
#define KEVENT_POLL_POLLIN 0x1
#define KEVENT_POLL_POLLPRI 0x2
#define KEVENT_POLL_POLLOUT 0x4
#define KEVENT_POLL_POLLERR 0x8
#define KEVENT_POLL_POLLHUP 0x10
#define KEVENT_POLL_POLLRDHUP 0x2000

/* --- wait flags ---------------------------------------------------------------------- */
#define KEVENT_FLAGS_ABSTIME 1 /* the timeout is an absolute CLOCK_REALTIME time */

/* --- sizes --------------------------------------------------------------------------- */
#define KEVENT_MAX_EVENTS 4096       /* most entries one kevent_ctl takes */
#define KEVENT_DEFAULT_RING 1024     /* the internal ring of a queue made without one */
#define KEVENT_MAX_RING_SIZE 16777216 /* ext: most entries a ring may have (2^24) */

/* ext: a timeout that never ends: { KEVENT_TIMEOUT_INFINITE_SEC, 0 }. Any other negative
 * tv_sec, or a tv_nsec outside 0..999999999, is EINVAL. A zero timeout does not block. */
#define KEVENT_TIMEOUT_INFINITE_SEC (-1)

/* --- structures ---------------------------------------------------------------------- */

/* What a kevent is about: an fd, a timer period, a signal number... */
struct kevent_id {
#ifdef __GNUC__
    __extension__
#endif
    union {
        uint32_t raw[2];
        uint64_t raw_u64;
    };
};

/* One kevent: 40 bytes, as in 2006. */
struct ukevent {
    struct kevent_id id;  /* what the event is about */
    uint32_t type;        /* event source, KEVENT_SOCKET... */
    uint32_t event;       /* event mask within that source */
    uint32_t req_flags;   /* what the caller asks for, KEVENT_REQ_* */
    uint32_t ret_flags;   /* what the queue reports, KEVENT_RET_* */
    uint32_t ret_data[2]; /* result; ret_data[1] is the errno of a failed request */
#ifdef __GNUC__
    __extension__
#endif
    union {               /* the caller's cookie, copied through unchanged */
        uint32_t user[2];
        void *ptr;
    };
};

/*
 * The ring a program reads its events from, in its own memory, as in take25-take30:
 * kevent_wait() copies up to num ready events into event[] at ring_kidx and moves
 * ring_kidx (and ring_over, the number of times ring_kidx wrapped) past them; the
 * program reads event[uidx] onwards and gives entries back with kevent_commit().
 * A ring of num entries takes KEVENT_RING_BYTES(num) bytes, aligned for a uint64_t.
 *
 * differs: the queue's shared ring (a memfd, mapped by the library in every process
 * that uses the queue) is not this array. Its slots are 64 bytes, with a state word
 * that says which process owns each entry, 64-bit positions, and a claim protocol of
 * compare-and-swaps that plain C reads could not follow. The ring above is each
 * process's own view of its claims: kevent_wait claims entries in the shared ring for
 * this process and copies each claimed ukevent here; kevent_commit(new_uidx, over)
 * commits in the shared ring the entries this process copied below that index. So in
 * one process the indices behave as in 2006; other processes see their own rings.
 *   - Indices are this process's: event[i] for i = uidx .. ring_kidx (modulo num) holds
 *     what its kevent_wait calls claimed, in order, whichever other processes consume.
 *   - A forked child starts with an empty ring: its first kevent_* call on the handle
 *     sets ring_kidx and ring_over to 0 in its copy of this memory; start its index at
 *     0 (the parent's claimed entries stay the parent's).
 *   - The memory must stay valid and unmoved until kevent_close(); the library writes
 *     into it only inside kevent_* calls on this handle (kevent_init, kevent_connect,
 *     kevent_wait, and a forked child's first call).
 *   - Several threads of one process share the ring as in 2006: a commit commits every
 *     entry below its index, another thread's included. Threads that consume on their
 *     own should each use kevent_get_events, which commits exactly what it copied.
 *   - ring_kidx and ring_over are written with atomic stores; a thread other than the
 *     one that called kevent_wait should read them with __atomic_load_n.
 */
struct kevent_ring {
    unsigned int ring_kidx; /* index one past the last entry copied in */
    unsigned int ring_over; /* how many times ring_kidx went round the ring */
    struct ukevent event[]; /* num entries */
};

/* ext: bytes a ring of num entries takes. */
#define KEVENT_RING_BYTES(num) (sizeof(struct kevent_ring) + (size_t)(num) * sizeof(struct ukevent))

/* --- the calls ----------------------------------------------------------------------- */

/*
 * Creates a queue and returns its handle, a file descriptor number of this process.
 * ring == NULL and num == 0: no ring, events are taken with kevent_get_events only (from
 * an internal shared ring of KEVENT_DEFAULT_RING entries). Otherwise ring is the
 * program's ring of num entries (2 .. KEVENT_MAX_RING_SIZE), see struct kevent_ring.
 * EINVAL: num == 1, a ring without a size or a size without a ring, num too large,
 * flags != 0 (none are defined). EFAULT: ring not writable for KEVENT_RING_BYTES(num).
 * differs: the queue's threads (a producer thread, the gate other processes attach
 * through) run in this process; the shared ring holds num rounded up to a power of two.
 */
int kevent_init(struct kevent_ring *ring, unsigned int num, unsigned int flags);

/*
 * Applies cmd to the num entries of arg (at most KEVENT_MAX_EVENTS).
 * ADD: entries ready at once (KEVENT_RET_DONE, not queued unless
 * KEVENT_REQ_ALWAYS_QUEUE) and entries that failed (KEVENT_RET_BROKEN | KEVENT_RET_DONE,
 * errno in ret_data[1]: EEXIST for a duplicate (type, id), ENOSYS for AIO, NAIO or an
 * unknown type, EINVAL for a bad event mask, EBADF for a bad fd) are moved to the front
 * of arg; returns how many. REMOVE, MODIFY, READY: each entry is written back with DONE,
 * or BROKEN | DONE and ENOENT in ret_data[1]; returns how many failed. READY with
 * num == 0 wakes one waiter. EINVAL: unknown cmd, num too large. EFAULT: bad arg.
 * differs: an fd kevent's id is the caller's fd number in the caller's process; each
 * process that controls a shared queue has its own kevents, gone when it exits.
 */
int kevent_ctl(int fd, unsigned int cmd, unsigned int num, struct ukevent *arg);

/*
 * Waits until at least min events are ready or the timeout passes, copies up to max of
 * them into buf, commits them, and returns how many it copied (0: timed out or woken).
 * min == 0 or a zero timeout does not block. EINVAL: max == 0, min > max, bad flags or
 * timespec. EFAULT: buf not writable for max entries.
 * differs: the original ignored min; it is honoured. O_NONBLOCK on the handle is not
 * consulted: pass a zero timeout.
 */
int kevent_get_events(int fd, unsigned int min, unsigned int max, struct timespec timeout,
                      struct ukevent *buf, unsigned int flags);

/*
 * Sleeps until an event is ready, a wake-up is asked for (KEVENT_CTL_READY with no
 * entries, a KEVENT_REQ_WAKEUP_ALL kevent), or the timeout passes; then copies up to num
 * ready events into the ring at ring_kidx and returns how many (0: timed out or woken).
 * Returns 0 at once if old_uidx is not the ring's user index (this process's view is
 * stale: another thread committed), or if the ring has no free entry (commit first).
 * EINVAL: no ring, num == 0, bad flags or timespec. EPIPE: the queue closed.
 */
int kevent_wait(int fd, unsigned int num, unsigned int old_uidx, struct timespec timeout,
                unsigned int flags);

/*
 * Gives back every entry of the ring below the index new_uidx of wrap over, and returns
 * how many it committed (0: they were committed already; several threads may commit the
 * same entries). EOVERFLOW: (new_uidx, over) is from before the user index's last wrap,
 * a stale commit (never taken for a new wrap, the take29 hole). EINVAL: no ring,
 * new_uidx >= num, or an index beyond what kevent_wait copied in.
 */
int kevent_commit(int fd, unsigned int new_uidx, unsigned int over);

/*
 * ext: closes a handle (the original's close(fd)). In the owner: stops the queue's
 * threads, wakes every waiter of every process with EPIPE. Elsewhere: this process
 * leaves the queue; entries it claimed and did not commit are delivered again.
 */
int kevent_close(int fd);

/*
 * ext: sharing a queue with other processes.
 *
 * After fork(): the child keeps using the handle (and its copy of the ring memory):
 * its first kevent_* call attaches it as a consumer of its own. It controls its own
 * kevents through the owner (a connection made on its first kevent_ctl). A child that
 * dies holding entries has them delivered again (KEVENT_RET_REDELIVERED) within 100 ms.
 *
 * kevent_serve: the owner serves the queue on a Unix socket at path (removed when the
 * queue closes). Only processes of the same user may connect. EOPNOTSUPP: not the
 * owner. EADDRINUSE: path exists.
 *
 * kevent_connect: attaches to the queue served at path and returns a handle of this
 * process, with ring and num as for kevent_init. Errors: those of connect(2) (ENOENT,
 * ECONNREFUSED...), EPERM (another user serves path), ETIMEDOUT (no answer within
 * 5 s), ECONNREFUSED (the owner serves its maximum of connections).
 */
int kevent_serve(int fd, const char *path);
int kevent_connect(const char *path, struct kevent_ring *ring, unsigned int num);

/*
 * ext: the library's own ABI, for checking a header against the library a program runs
 * with: count entries of (name, value), where a name is a KEVENT_* constant,
 * "sizeof(struct X)" or "offsetof(struct X, field)". tests/c/layout.c uses it.
 */
struct kevent_abi_entry {
    const char *name;
    uint64_t value;
};
const struct kevent_abi_entry *kevent_abi(size_t *count);

#ifdef __cplusplus
}
#endif

#endif /* KEVENT_H */
