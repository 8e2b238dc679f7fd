/*
 * How a sleeping reader is woken for a pipe write, two ways (README, "Consumers harvest"):
 *   0: blocked in epoll_wait on an epoll fd that watches the pipe (what the kevent poller
 *      does now, and what an epoll consumer does);
 *   1: blocked in ppoll on that epoll fd and an eventfd, then epoll_wait(0) for the
 *      reports (what the kevent poller did before).
 * A writer thread writes a timestamp every 50 us (40,000 writes); the reader drains the
 * pipe and records write-to-read times. Prints the reader's CPU per event and p50/p99.
 *
 *   gcc -O2 -pthread benches/c/wake_paths.c -o /tmp/wake_paths
 *   for i in 1 2 3; do /tmp/wake_paths 0; /tmp/wake_paths 1; done
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#define WRITES 40000
static int ep, pfd[2], bell, mode;
static volatile int stop;
static long reader_cpu_ns, lat[WRITES], nlat;

static long now_ns(clockid_t c) {
    struct timespec t;
    clock_gettime(c, &t);
    return t.tv_sec * 1000000000L + t.tv_nsec;
}

static void *reader(void *arg) {
    (void)arg;
    long cpu0 = now_ns(CLOCK_THREAD_CPUTIME_ID);
    struct epoll_event ev[64];
    while (!stop) {
        int n;
        if (mode == 0) {
            n = epoll_wait(ep, ev, 64, 50);
        } else {
            struct pollfd p[2] = {{ep, POLLIN, 0}, {bell, POLLIN, 0}};
            struct timespec ts = {0, 50000000};
            ppoll(p, 2, &ts, NULL);
            n = epoll_wait(ep, ev, 64, 0);
        }
        for (int i = 0; i < n; i++) {
            long stamps[8];
            while (read(pfd[0], stamps, sizeof stamps) > 0)
                if (nlat < WRITES)
                    lat[nlat++] = now_ns(CLOCK_MONOTONIC) - stamps[0];
        }
    }
    reader_cpu_ns = now_ns(CLOCK_THREAD_CPUTIME_ID) - cpu0;
    return NULL;
}

static int cmp(const void *a, const void *b) {
    long x = *(const long *)a, y = *(const long *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    mode = argc > 1 ? atoi(argv[1]) : 0;
    if (pipe2(pfd, O_NONBLOCK) || (ep = epoll_create1(0)) < 0 ||
        (bell = eventfd(0, EFD_NONBLOCK)) < 0)
        return perror("setup"), 1;
    struct epoll_event e = {.events = EPOLLIN | EPOLLET};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, pfd[0], &e))
        return perror("epoll_ctl"), 1;
    pthread_t t;
    pthread_create(&t, NULL, reader, NULL);
    usleep(10000);
    for (int i = 0; i < WRITES; i++) {
        long w = now_ns(CLOCK_MONOTONIC);
        if (write(pfd[1], &w, sizeof w) != sizeof w)
            return perror("write"), 1;
        struct timespec ts = {0, 50000};
        clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, NULL);
    }
    stop = 1;
    pthread_join(t, NULL);
    qsort(lat, nlat, sizeof lat[0], cmp);
    printf("%-22s events=%ld reader CPU/event=%.2f us p50=%.1f us p99=%.1f us\n",
           mode ? "ppoll + epoll_wait(0)" : "epoll_wait", nlat,
           reader_cpu_ns / 1e3 / nlat, lat[nlat / 2] / 1e3, lat[nlat * 99 / 100] / 1e3);
    return 0;
}
