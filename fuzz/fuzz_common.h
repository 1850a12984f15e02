/* fuzz_common.h - what both harnesses share: a check that aborts (the
 * fuzzer reports it as a crash with the input that broke it), the rules a
 * refusal message must follow, writing seed files, and the start-up that
 * writes a harness's seeds (its own make_seeds) when FUZZ_SEEDS names a
 * folder.
 */
#ifndef FUZZ_COMMON_H
#define FUZZ_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "faceid.h"

#define CHECK(cond, ...)                                                    \
    do {                                                                    \
        if (!(cond)) {                                                      \
            fprintf(stderr, "invariant broken at %s:%d: ", __FILE__, __LINE__); \
            fprintf(stderr, __VA_ARGS__);                                   \
            fputc('\n', stderr);                                            \
            abort();                                                        \
        }                                                                   \
    } while (0)

/* a refusal names its problem: terminated, not empty, one line */
static inline void check_message(int rc, const char *err)
{
    size_t n = strnlen(err, FID_ERRMAX);
    CHECK(rc == FID_EARG || rc == FID_ENOMEM || rc == FID_EIO || rc == FID_EFORMAT, "status %d", rc);
    CHECK(n > 0 && n < FID_ERRMAX, "status %d without a message", rc);
    CHECK(!memchr(err, '\n', n), "message on more than one line: %s", err);
}

static inline void write_file(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    CHECK(f && fwrite(p, 1, n, f) == n && fclose(f) == 0, "cannot write %s", path);
}

static inline void write_seed(const char *dir, const char *name, const void *p, size_t n)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    write_file(path, p, n);
}

static inline unsigned char *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    unsigned char *b = NULL;
    long n;
    CHECK(f && fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0,
          "cannot read %s", path);
    b = malloc((size_t)n + 1);
    CHECK(b && fread(b, 1, (size_t)n, f) == (size_t)n, "cannot read %s", path);
    fclose(f);
    *len = (size_t)n;
    return b;
}

/* a scratch file name of this process, on tmpfs where there is one */
static inline const char *scratch_path(const char *tag)
{
    static char path[256];
    const char *dir = getenv("FUZZ_TMPDIR");
    if (!dir) dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(path, sizeof path, "%s/faceid-fuzz-%s-%ld", dir, tag, (long)getpid());
    return path;
}

/* each harness writes its seed files into dir */
static void make_seeds(const char *dir);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    const char *dir = getenv("FUZZ_SEEDS");
    (void)argc;
    (void)argv;
    if (dir) {
        make_seeds(dir);
        exit(0);
    }
    return 0;
}

#endif
