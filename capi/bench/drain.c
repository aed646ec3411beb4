/* How fast a C reader drains: drain SOCKET SECONDS. Counts records (touching each path's
 * bytes, as a real reader would), prints records per wall second and per CPU second of
 * this process, and the loss it was told of. Start the service with --synthetic RATE.
 * Build: gcc -O2 -I capi/include capi/bench/drain.c target/release/libfirehose.a -lgcc_s -lm -ldl -lpthread -o drain */
#include <firehose.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>

static double now(void) {
    struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static double cpu(void) {
    struct rusage u; getrusage(RUSAGE_SELF, &u);
    return u.ru_utime.tv_sec + u.ru_stime.tv_sec + (u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

int main(int argc, char **argv) {
    if (argc < 3) return fprintf(stderr, "usage: drain SOCKET SECONDS\n"), 2;
    fh_options o; fh_options_init(&o);
    o.socket = argv[1];
    o.backfill = false;  /* live only: loss is reported, not filled from history */
    o.name = "bench-c-drain";
    double secs = atof(argv[2]);
    fh_reader *r; static fh_event ev[4096]; size_t n;
    if (fh_connect(&o, &r) != FH_OK) return fprintf(stderr, "%s\n", fh_last_error()), 1;
    struct pollfd p = { .fd = fh_reader_fd(r), .events = POLLIN };
    unsigned long long records = 0, lost = 0, bytes = 0, wakeups = 0;
    double t0 = now(), c0 = cpu();
    while (now() - t0 < secs) {
        if (poll(&p, 1, 100) <= 0) continue;
        wakeups++;
        if (fh_reader_drain(r, ev, 4096, &n) != FH_OK) return fprintf(stderr, "%s\n", fh_last_error()), 1;
        for (size_t i = 0; i < n; i++) {
            if (ev[i].what == FH_EVENT_RECORD) { records++; bytes += ev[i].path[ev[i].path_len - 1]; }
            else if (ev[i].what == FH_EVENT_LAGGED || ev[i].what == FH_EVENT_GAP) lost += ev[i].to - ev[i].seq + 1;
        }
    }
    double wall = now() - t0, used = cpu() - c0;
    printf("c drain: %llu records, %.0f/s wall, %.0f/s per CPU second (%.0f%% of a core), %llu wakeups, lost %llu (%llu)\n",
           records, records / wall, records / (used > 1e-9 ? used : 1e-9), 100 * used / wall, wakeups, lost, bytes & 1);
    fh_reader_free(r);
    return 0;
}
