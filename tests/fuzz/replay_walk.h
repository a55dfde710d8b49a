/*
 * The corpus walk shared by the fuzz replayers (replay.c, replay_any.c):
 * each argument that names a directory has its regular files (not dot
 * files) replayed in name order, any other argument is replayed as a file;
 * with no argument, the fallback directory.  The replayer's own function
 * judges one file and counts it in replay_passed / replay_failed;
 * replay_finish() prints "N passed, N failed, 0 skipped" (no file at all
 * is a failure) and gives main's exit status.
 */
#ifndef DIFFUSE_TESTS_REPLAY_WALK_H
#define DIFFUSE_TESTS_REPLAY_WALK_H

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static int replay_passed, replay_failed;

static int replay_by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void replay_dir(const char *dir, void (*one)(const char *path))
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char **names = NULL;
    size_t n = 0, cap = 0, i;
    if (d == NULL) {
        printf("FAIL %s: cannot open the directory\n", dir);
        replay_failed++;
        return;
    }
    while ((e = readdir(d)) != NULL) {
        size_t L = strlen(dir) + strlen(e->d_name) + 2;
        struct stat st;
        char *p;
        if (e->d_name[0] == '.')
            continue;
        p = (char *)malloc(L);
        if (p == NULL)
            break;
        snprintf(p, L, "%s/%s", dir, e->d_name);
        if (stat(p, &st) != 0 || !S_ISREG(st.st_mode)) {
            free(p);
            continue;
        }
        if (n == cap) {
            char **nn = (char **)realloc(names, (cap = cap ? 2 * cap : 64) * sizeof *names);
            if (nn == NULL) {
                free(p);
                break;
            }
            names = nn;
        }
        names[n++] = p;
    }
    closedir(d);
    if (n > 0)
        qsort(names, n, sizeof *names, replay_by_name);
    for (i = 0; i < n; i++) {
        one(names[i]);
        free(names[i]);
    }
    free(names);
}

static void replay_args(int argc, char **argv, const char *fallback,
                        void (*one)(const char *path))
{
    int i;
    if (argc < 2)
        replay_dir(fallback, one);
    for (i = 1; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) == 0 && S_ISDIR(st.st_mode))
            replay_dir(argv[i], one);
        else
            one(argv[i]);
    }
}

static int replay_finish(void)
{
    if (replay_passed + replay_failed == 0) {
        printf("FAIL no corpus file found\n");
        replay_failed++;
    }
    printf("%d passed, %d failed, 0 skipped\n", replay_passed, replay_failed);
    return replay_failed ? 1 : 0;
}

#endif
