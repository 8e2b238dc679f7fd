/*
 * What the C programs of tests/c share: a failed check prints where and why and exits
 * 1; deadlines so that a lost event fails a program instead of hanging it.
 */
#ifndef KEVENT_TEST_CHECK_H
#define KEVENT_TEST_CHECK_H

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CHECK(cond, ...)                                                                   \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__, __LINE__, #cond);       \
            fprintf(stderr, __VA_ARGS__);                                                  \
            fprintf(stderr, " (errno %d: %s)\n", errno, strerror(errno));                  \
            exit(1);                                                                       \
        }                                                                                  \
    } while (0)

/* A call that must succeed (>= 0). */
#define OK(call) CHECK((call) >= 0, "%s", "")

/* A call that must fail with errno e. */
#define FAILS(call, e)                                                                     \
    do {                                                                                   \
        errno = 0;                                                                         \
        long r_ = (long)(call);                                                            \
        CHECK(r_ == -1 && errno == (e), "expected -1 with %s, got %ld", #e, r_);           \
    } while (0)

static inline uint64_t now_ns(clockid_t clock) {
    struct timespec t;
    clock_gettime(clock, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static inline struct timespec ms(long n) {
    struct timespec t;
    t.tv_sec = n / 1000;
    t.tv_nsec = (n % 1000) * 1000000L;
    return t;
}

/* xorshift64: the writers' stream picker. */
static inline uint64_t xorshift(uint64_t *s) {
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

#endif
