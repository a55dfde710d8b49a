/*
 * The seed-corpus check shared by the reader tests (test_idx.c, test_npy.c,
 * test_png_read.c): every file of a fuzz corpus folder goes through the
 * reader; one named ok_* must be accepted and one named bad_* refused, and
 * an optional extra check judges the refusal's message.
 */
#ifndef DIFFUSE_TESTS_CORPUS_CHECK_H
#define DIFFUSE_TESTS_CORPUS_CHECK_H

#include <dirent.h>
#include <stdio.h>
#include <string.h>

/* Reads path; 0 when accepted (and freed), else refused with err set. */
typedef int (*corpus_reader)(const char *path, char *err, size_t errlen);
/* Problems with a file's outcome beyond accepted/refused, each printed. */
typedef int (*corpus_extra)(const char *name, int rc, const char *err);

/* Runs every file of dir (dot files left out) through read; returns how many
 * files it read, or -1 when dir cannot be opened; *wrong counts the
 * problems, each printed with the file's name. */
static int corpus_check(const char *dir, corpus_reader read, corpus_extra extra, int *wrong)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int files = 0;
    *wrong = 0;
    if (d == NULL)
        return -1;
    while ((e = readdir(d)) != NULL) {
        char path[512], err[256] = "";
        int rc;
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        rc = read(path, err, sizeof err);
        if ((strncmp(e->d_name, "ok_", 3) == 0 && rc != 0) ||
            (strncmp(e->d_name, "bad_", 4) == 0 && rc == 0)) {
            printf("  %s: %s\n", e->d_name, rc == 0 ? "accepted" : err);
            (*wrong)++;
        }
        if (extra != NULL)
            *wrong += extra(e->d_name, rc, err);
        files++;
    }
    closedir(d);
    return files;
}

#endif
