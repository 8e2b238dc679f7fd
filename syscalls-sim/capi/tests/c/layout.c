/*
 * The header against the library: every KEVENT_* constant of kevent.h and the sizeof
 * and offsetof of every struct it declares must equal what the library was compiled
 * with (kevent_abi(), computed by the Rust compiler from the Rust types and constants),
 * and every entry of the library's table must be checked here. A constant missing from
 * the header fails the compile; one the library has and this list lacks fails the run.
 * Compiled as C99 and as C++17 (tests/c/run.sh), with warnings as errors.
 */
#include <kevent.h>

#include <stdio.h>
#include <string.h>

struct fact {
    const char *name;
    uint64_t value;
};

#define C(name) {#name, (uint64_t)(name)}
#define SIZE(type) {"sizeof(" #type ")", (uint64_t)sizeof(type)}
#define OFF(type, field) {"offsetof(" #type ", " #field ")", (uint64_t)offsetof(type, field)}

static const struct fact facts[] = {
    C(KEVENT_CTL_ADD), C(KEVENT_CTL_REMOVE), C(KEVENT_CTL_MODIFY), C(KEVENT_CTL_READY),
    C(KEVENT_SOCKET), C(KEVENT_INODE), C(KEVENT_TIMER), C(KEVENT_POLL), C(KEVENT_NAIO),
    C(KEVENT_AIO), C(KEVENT_PIPE), C(KEVENT_SIGNAL), C(KEVENT_POSIX_TIMER), C(KEVENT_USER),
    C(KEVENT_MAX),
    C(KEVENT_REQ_ONESHOT), C(KEVENT_REQ_WAKEUP_ALL), C(KEVENT_REQ_ET),
    C(KEVENT_REQ_LAST_CHECK), C(KEVENT_REQ_ALWAYS_QUEUE), C(KEVENT_REQ_ALL),
    C(KEVENT_RET_BROKEN), C(KEVENT_RET_DONE), C(KEVENT_RET_COPY_FAILED),
    C(KEVENT_RET_REDELIVERED),
    C(KEVENT_SOCKET_RECV), C(KEVENT_SOCKET_ACCEPT), C(KEVENT_SOCKET_SEND),
    C(KEVENT_PIPE_READ), C(KEVENT_PIPE_WRITE), C(KEVENT_TIMER_FIRED), C(KEVENT_TIMER_ONCE),
    C(KEVENT_TIMER_ABSTIME), C(KEVENT_INODE_CREATE), C(KEVENT_INODE_REMOVE),
    C(KEVENT_SIGNAL_DELIVERY), C(KEVENT_SIGNAL_NOMASK), C(KEVENT_USER_READY),
    C(KEVENT_POLL_POLLIN), C(KEVENT_POLL_POLLPRI), C(KEVENT_POLL_POLLOUT),
    C(KEVENT_POLL_POLLERR), C(KEVENT_POLL_POLLHUP), C(KEVENT_POLL_POLLRDHUP),
    C(KEVENT_FLAGS_ABSTIME), C(KEVENT_MAX_EVENTS), C(KEVENT_DEFAULT_RING),
    C(KEVENT_MAX_RING_SIZE), C(KEVENT_TIMEOUT_INFINITE_SEC),
    SIZE(struct kevent_id), OFF(struct kevent_id, raw), OFF(struct kevent_id, raw_u64),
    SIZE(struct ukevent), OFF(struct ukevent, id), OFF(struct ukevent, type),
    OFF(struct ukevent, event), OFF(struct ukevent, req_flags),
    OFF(struct ukevent, ret_flags), OFF(struct ukevent, ret_data), OFF(struct ukevent, user),
    OFF(struct ukevent, ptr),
    SIZE(struct kevent_ring), OFF(struct kevent_ring, ring_kidx),
    OFF(struct kevent_ring, ring_over), OFF(struct kevent_ring, event),
    SIZE(struct kevent_abi_entry), OFF(struct kevent_abi_entry, name),
    OFF(struct kevent_abi_entry, value),
    SIZE(struct timespec),
};

int main(void) {
    size_t n = 0, i, j, bad = 0;
    const size_t nfacts = sizeof facts / sizeof facts[0];
    const struct kevent_abi_entry *lib = kevent_abi(&n);
    if (lib == NULL || n == 0) {
        fprintf(stderr, "layout: kevent_abi() returned no table\n");
        return 1;
    }
    /* Every library entry is checked against the header... */
    for (i = 0; i < n; i++) {
        int found = 0;
        for (j = 0; j < nfacts; j++) {
            if (strcmp(lib[i].name, facts[j].name) == 0) {
                found = 1;
                if (lib[i].value != facts[j].value) {
                    fprintf(stderr, "layout: %s is %llu in kevent.h, %llu in the library\n",
                            lib[i].name, (unsigned long long)facts[j].value,
                            (unsigned long long)lib[i].value);
                    bad++;
                }
            }
        }
        if (!found) {
            fprintf(stderr, "layout: the library has %s, this test does not check it\n",
                    lib[i].name);
            bad++;
        }
    }
    /* ...and every fact of the header is in the library's table. */
    for (j = 0; j < nfacts; j++) {
        int found = 0;
        for (i = 0; i < n; i++)
            found |= strcmp(lib[i].name, facts[j].name) == 0;
        if (!found) {
            fprintf(stderr, "layout: %s is not in the library's table\n", facts[j].name);
            bad++;
        }
    }
    /* The ring's size macro agrees with the struct. */
    if (KEVENT_RING_BYTES(3) != sizeof(struct kevent_ring) + 3 * sizeof(struct ukevent)) {
        fprintf(stderr, "layout: KEVENT_RING_BYTES is wrong\n");
        bad++;
    }
    if (bad) {
        fprintf(stderr, "layout: %zu mismatches\n", bad);
        return 1;
    }
    printf("layout: %zu constants and layouts of kevent.h match the library\n", nfacts);
    return 0;
}
