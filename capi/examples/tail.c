/* Prints every record as it arrives: tail [SOCKET [COUNT]]. Build: see docs/embedding.md. */
#include <firehose.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    fh_options o; fh_options_init(&o);
    o.socket = argc > 1 ? argv[1] : NULL;                 /* NULL: the default socket */
    long left = argc > 2 ? atol(argv[2]) : -1;            /* records to print; -1: all */
    fh_reader *r; fh_event ev[1024]; size_t n;
    if (fh_connect(&o, &r) != FH_OK) return fprintf(stderr, "%s\n", fh_last_error()), 1;
    struct pollfd p = { .fd = fh_reader_fd(r), .events = POLLIN };
    while (left && poll(&p, 1, -1) > 0 && fh_reader_drain(r, ev, 1024, &n) == FH_OK)
        for (size_t i = 0; i < n && left; i++) {
            if (ev[i].what != FH_EVENT_RECORD) continue;
            printf("%llu ", (unsigned long long)ev[i].seq), left--;
            for (size_t j = 0; j < ev[i].path_len; j++) {  /* a name is any bytes: escape */
                unsigned c = ev[i].path[j];
                printf(c > 31 && c < 127 && c != '\\' ? "%c" : "\\x%02x", c);
            }
            putchar('\n');
        }
    fh_reader_free(r);
    return left != 0;
}
