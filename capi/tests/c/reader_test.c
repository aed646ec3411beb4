/*
 * The C API against a real firehosed, run by capi/tests/c_abi.rs under valgrind:
 *   reader_test SOCKET DIR BEFORE
 * DIR is the service's watched directory, which already holds files f-0 .. f-(BEFORE-1).
 * It checks the error paths, then reads from the oldest record (backfill), writes BEFORE
 * more files and one whose name holds a newline and an escape sequence while connected
 * (live), checks every record arrives once and in order, that the fd sleeps when there
 * is nothing and wakes for a new file, that status and history pages work on the same
 * connection without disturbing the drain's views, and frees everything.
 * Prints "ok ..." and exits 0, or prints what failed and exits 1.
 */
#include <firehose.h>

#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define CHECK(cond, ...)                                                         \
    do {                                                                         \
        if (!(cond)) {                                                           \
            fprintf(stderr, "FAILED line %d: %s: ", __LINE__, #cond);            \
            fprintf(stderr, __VA_ARGS__);                                        \
            fprintf(stderr, " (last error: %s)\n", fh_last_error());             \
            exit(1);                                                             \
        }                                                                        \
    } while (0)

static const char ODD[] = "odd\nname\x1b[31m";

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void touch(const char *dir, const char *name) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0644);
    CHECK(fd >= 0, "creating %s", path);
    close(fd);
}

/* Whether a path (bytes with a length) ends with "/" + name. */
static int ends_with(const uint8_t *p, size_t n, const char *name) {
    size_t k = strlen(name);
    return n > k && p[n - k - 1] == '/' && memcmp(p + n - k, name, k) == 0;
}

/* Index i for a path ending in "/f-<i>", else -1. */
static long file_index(const uint8_t *p, size_t n) {
    size_t s = n;
    while (s > 0 && p[s - 1] != '/') s--;
    if (n - s < 3 || memcmp(p + s, "f-", 2) != 0) return -1;
    long v = 0;
    for (size_t i = s + 2; i < n; i++) {
        if (p[i] < '0' || p[i] > '9') return -1;
        v = v * 10 + (p[i] - '0');
    }
    return v;
}

static void error_paths(void) {
    fh_options o;
    fh_options_init(&o);
    fh_reader *r = (fh_reader *)1;

    o.socket = "/nonexistent-firehose-dir/s.sock";
    CHECK(fh_connect(&o, &r) == FH_ERR_NOT_RUNNING, "no service there");
    CHECK(r == NULL, "out is NULL after a failure");
    CHECK(strstr(fh_last_error(), "/nonexistent-firehose-dir/s.sock") != NULL,
          "the message names the socket: %s", fh_last_error());

    char longpath[300];
    memset(longpath, 'a', sizeof longpath - 1);
    longpath[0] = '/';
    longpath[sizeof longpath - 1] = 0;
    o.socket = longpath;
    CHECK(fh_connect(&o, &r) == FH_ERR_PATH_TOO_LONG, "a 299-byte socket path");

    fh_options_init(&o);
    o.start = 7;
    CHECK(fh_connect(&o, &r) == FH_ERR_INVALID_ARGUMENT, "start 7 is no fh_start");
    CHECK(strstr(fh_last_error(), "start") != NULL, "says which field");
    CHECK(fh_connect(&o, NULL) == FH_ERR_INVALID_ARGUMENT, "out NULL");
    CHECK(strcmp(fh_error_name(FH_ERR_TIMEOUT), "FH_ERR_TIMEOUT") == 0, "names");
    CHECK(strcmp(fh_error_name(999), "FH_ERR_UNKNOWN") == 0, "unknown code");

    size_t n = 7;
    fh_event ev[4];
    CHECK(fh_reader_drain(NULL, ev, 4, &n) == FH_ERR_INVALID_ARGUMENT && n == 0, "drain NULL");
    CHECK(fh_reader_fd(NULL) == -1, "fd of NULL");
    fh_reader_free(NULL);
    fh_status_free(NULL);
    fh_rows_free(NULL);
}

typedef struct {
    long want;           /* files f-0 .. f-(want-1) */
    unsigned char *seen; /* creates seen per index */
    long creates;
    int odd_seen;
    uint64_t last_seq;
    long records;
} tally;

/* Drains once; returns how many events it handed out. */
static size_t drain_once(fh_reader *r, fh_event *ev, size_t cap, tally *t) {
    size_t n = 0;
    fh_error e = fh_reader_drain(r, ev, cap, &n);
    CHECK(e == FH_OK, "drain: %s", fh_error_name(e));
    for (size_t i = 0; i < n; i++) {
        const fh_event *x = &ev[i];
        if (x->what == FH_EVENT_RECORD) {
            CHECK(x->seq > t->last_seq, "seq %llu after %llu", (unsigned long long)x->seq,
                  (unsigned long long)t->last_seq);
            t->last_seq = x->seq;
            t->records++;
            CHECK(x->path != NULL && x->path_len > 0, "a record has a path");
            if (x->kind == FH_KIND_CREATE) {
                long idx = file_index(x->path, x->path_len);
                if (idx >= 0 && idx < t->want) {
                    CHECK(!t->seen[idx], "f-%ld created twice", idx);
                    t->seen[idx] = 1;
                    t->creates++;
                }
                if (ends_with(x->path, x->path_len, ODD)) t->odd_seen = 1;
            }
        } else if (x->what == FH_EVENT_GAP || x->what == FH_EVENT_LAGGED ||
                   x->what == FH_EVENT_MISSING || x->what == FH_EVENT_STORAGE_GAP) {
            CHECK(x->to >= x->seq, "a range");
            t->last_seq = x->to;
        }
    }
    return n;
}

int main(int argc, char **argv) {
    CHECK(argc == 4, "usage: reader_test SOCKET DIR BEFORE");
    const char *socket = argv[1], *dir = argv[2];
    long before = atol(argv[3]);
    error_paths();

    fh_options o;
    fh_options_init(&o);
    o.socket = socket;
    o.name = "reader_test (C)";
    o.start = FH_START_OLDEST;
    o.lossless = true;
    fh_reader *r = NULL;
    CHECK(fh_connect(&o, &r) == FH_OK && r != NULL, "connect to %s", socket);
    int fd = fh_reader_fd(r);
    CHECK(fd >= 0, "an fd");

    tally t = {.want = 2 * before, .seen = calloc((size_t)(2 * before), 1)};
    size_t cap = 512;
    fh_event *ev = calloc(cap, sizeof *ev);

    /* Live: written while connected. */
    char name[64];
    for (long i = before; i < 2 * before; i++) {
        snprintf(name, sizeof name, "f-%ld", i);
        touch(dir, name);
    }
    touch(dir, ODD);

    double deadline = now_s() + 60;
    struct pollfd p = {.fd = fd, .events = POLLIN};
    while ((t.creates < t.want || !t.odd_seen) && now_s() < deadline) {
        int pr = poll(&p, 1, 1000);
        CHECK(pr >= 0, "poll");
        if (pr > 0) drain_once(r, ev, cap, &t);
    }
    CHECK(t.creates == t.want, "%ld of %ld creates", t.creates, t.want);
    CHECK(t.odd_seen, "the name with a newline and an escape arrived as its bytes");

    /* Quiet: drain until nothing came for 500 ms; then the fd sleeps. */
    for (double quiet = now_s() + 0.5; now_s() < quiet;) {
        if (poll(&p, 1, 100) > 0 && drain_once(r, ev, cap, &t) > 0) quiet = now_s() + 0.5;
    }
    CHECK(drain_once(r, ev, cap, &t) == 0, "nothing left");
    CHECK(poll(&p, 1, 300) == 0, "the fd sleeps when there is nothing to drain");

    /* A new file wakes it. */
    touch(dir, "wake-me");
    CHECK(poll(&p, 1, 10000) == 1, "a new file wakes the fd");
    size_t n = 0;
    double until = now_s() + 10;
    while (n == 0 && now_s() < until) n = drain_once(r, ev, cap, &t);
    CHECK(n > 0 && ev[0].what == FH_EVENT_RECORD, "the wake-up has the record");
    CHECK(ends_with(ev[0].path, ev[0].path_len, "wake-me"), "it is wake-me");

    /* Status and a query on the same connection leave the drain's views alone. */
    uint8_t copy[4096];
    size_t copy_len = ev[0].path_len;
    memcpy(copy, ev[0].path, copy_len);
    fh_status *st = NULL;
    CHECK(fh_reader_status(r, &st) == FH_OK && st != NULL, "status");
    CHECK(st->next_seq > t.last_seq, "next_seq %llu > %llu", (unsigned long long)st->next_seq,
          (unsigned long long)t.last_seq);
    CHECK(st->readers >= 1 && st->health != NULL && st->storage != NULL, "status fields");
    CHECK(st->pid > 0, "the service's pid");

    /* History: the creates of f-*, paged 100 at a time. */
    fh_query q = {.from_seq = 1, .glob = "**/f-*", .kinds = 1u << FH_KIND_CREATE, .limit = 100};
    long stored = 0, pages = 0;
    uint64_t prev = 0;
    for (;;) {
        fh_rows *rows = NULL;
        CHECK(fh_reader_query(r, &q, &rows) == FH_OK && rows != NULL, "query page %ld", pages);
        size_t len = fh_rows_len(rows);
        CHECK(len <= 100, "a page holds at most its limit");
        for (size_t i = 0; i < len; i++) {
            fh_event row;
            CHECK(fh_rows_get(rows, i, &row) == FH_OK, "row %zu", i);
            CHECK(row.what == FH_EVENT_RECORD && row.kind == FH_KIND_CREATE, "a create");
            CHECK(row.seq > prev, "rows in seq order");
            prev = row.seq;
            CHECK(file_index(row.path, row.path_len) >= 0, "matches the glob");
            stored++;
        }
        fh_event dummy;
        CHECK(fh_rows_get(rows, len, &dummy) == FH_ERR_INVALID_ARGUMENT, "out of range");
        CHECK(!fh_rows_truncated(rows, NULL), "history reaches back to seq 1");
        pages++;
        int more = fh_rows_more(rows);
        q.from_seq = fh_rows_next_seq(rows);
        fh_rows_free(rows);
        if (!more) break;
    }
    CHECK(stored == t.want, "%ld stored creates of %ld", stored, t.want);
    CHECK(pages >= t.want / 100, "%ld pages", pages);

    fh_query bad = {.from_seq = 1, .glob = "[", .limit = 10};
    fh_rows *none = (fh_rows *)1;
    CHECK(fh_reader_query(r, &bad, &none) == FH_ERR_INVALID_QUERY && none == NULL, "a bad glob");
    bad.glob = NULL;
    bad.limit = FH_QUERY_MAX_LIMIT + 1;
    CHECK(fh_reader_query(r, &bad, &none) == FH_ERR_INVALID_QUERY, "a limit too large");
    CHECK(strstr(fh_last_error(), "limit") != NULL, "says the limit");

    CHECK(ev[0].path_len == copy_len && memcmp(ev[0].path, copy, copy_len) == 0,
          "the drain's views survived status and queries");

    printf("ok records=%ld creates=%ld pages=%ld next_seq=%llu readers=%llu health=%s\n",
           t.records, t.creates, pages, (unsigned long long)fh_reader_next_seq(r),
           (unsigned long long)st->readers, st->health);
    fh_status_free(st);
    fh_reader_free(r);
    free(ev);
    free(t.seen);
    return 0;
}
