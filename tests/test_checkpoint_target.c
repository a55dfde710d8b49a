/* diffuse_checkpoint_save() and what it saves over (issue 12, point 9):
 * an existing path that is not a regular file (a symbolic link, a FIFO, a
 * device, a directory) is refused with DIFFUSE_EIO and left as it was; the
 * temporary files of saves killed before their rename
 * ("<path>.tmp-<host>-<pid>.XXXXXX") are removed by the next save of the
 * same path when their pid is dead, and kept when it is alive, when it is
 * this process's, or when the host or the path differs. */
#define _XOPEN_SOURCE 700 /* mknod, S_IFCHR */
#include "diffuse.h"
#include "harness.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

static char dir[64];

static const char *in_dir(char *buf, size_t cap, const char *name)
{
    snprintf(buf, cap, "%s/%s", dir, name);
    return buf;
}

static int exists(const char *p)
{
    struct stat st;
    return lstat(p, &st) == 0;
}

static int entries(void)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int n = 0;
    if (d == NULL)
        return -1;
    while ((e = readdir(d)) != NULL)
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

static diffuse_net *small_net(void)
{
    diffuse_net *n = NULL;
    if (diffuse_net_create_mlp(&n, 2, 4, 1, 4, DIFFUSE_PRED_EPS, DIFFUSE_VAR_FIXED_SMALL, 1, 1) !=
        DIFFUSE_OK)
        return NULL;
    return n;
}

static int write_text(const char *p, const char *text)
{
    FILE *f = fopen(p, "wb");
    if (f == NULL)
        return 0;
    fputs(text, f);
    return fclose(f) == 0;
}

static int has_text(const char *p, const char *text)
{
    char buf[64] = {0};
    FILE *f = fopen(p, "rb");
    size_t n;
    if (f == NULL)
        return 0;
    n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    return n == strlen(text) && memcmp(buf, text, n) == 0;
}

static void test_checkpoint_save_refuses_symlink(void)
{
    char target[128], link[128];
    diffuse_net *n = small_net();
    struct stat st;
    ASSERT_TRUE(n != NULL);
    ASSERT_TRUE(write_text(in_dir(target, sizeof target, "target.txt"), "keep me"));
    ASSERT_TRUE(symlink("target.txt", in_dir(link, sizeof link, "link.ckpt")) == 0);
    ASSERT_STATUS(diffuse_checkpoint_save(link, n, NULL), DIFFUSE_EIO);
    ASSERT_MESSAGE_HAS("diffuse_checkpoint_save: '");
    ASSERT_MESSAGE_HAS("link.ckpt' is a symbolic link, not a regular file: not replaced");
    ASSERT_TRUE(lstat(link, &st) == 0 && S_ISLNK(st.st_mode));
    ASSERT_TRUE(has_text(target, "keep me"));
    /* a dangling link too */
    ASSERT_TRUE(unlink(target) == 0);
    ASSERT_STATUS(diffuse_checkpoint_save(link, n, NULL), DIFFUSE_EIO);
    ASSERT_TRUE(lstat(link, &st) == 0 && S_ISLNK(st.st_mode));
    ASSERT_TRUE(!exists(target));
    ASSERT_EQ(entries(), 1);
    unlink(link);
    diffuse_net_free(n);
}

static void test_checkpoint_save_refuses_fifo_and_device(void)
{
    char fifo[128], dev[128];
    diffuse_net *n = small_net();
    struct stat st;
    ASSERT_TRUE(n != NULL);
    ASSERT_TRUE(mkfifo(in_dir(fifo, sizeof fifo, "fifo.ckpt"), 0600) == 0);
    ASSERT_STATUS(diffuse_checkpoint_save(fifo, n, NULL), DIFFUSE_EIO);
    ASSERT_MESSAGE_HAS("is a FIFO, not a regular file");
    ASSERT_TRUE(lstat(fifo, &st) == 0 && S_ISFIFO(st.st_mode));
    ASSERT_EQ(entries(), 1);
    unlink(fifo);
    /* A character device with /dev/null's numbers, made here: needs root
     * (as root, saving to /dev/null itself replaced the device). */
    if (stat("/dev/null", &st) != 0 ||
        mknod(in_dir(dev, sizeof dev, "null.ckpt"), S_IFCHR | 0600, st.st_rdev) != 0) {
        diffuse_net_free(n);
        SKIP("mknod: %s (not root): the FIFO was checked, not the device", strerror(errno));
    }
    ASSERT_STATUS(diffuse_checkpoint_save(dev, n, NULL), DIFFUSE_EIO);
    ASSERT_MESSAGE_HAS("is a character device, not a regular file");
    ASSERT_TRUE(lstat(dev, &st) == 0 && S_ISCHR(st.st_mode));
    ASSERT_EQ(entries(), 1);
    unlink(dev);
    diffuse_net_free(n);
}

/* The documented host part of the temporary names, derived here. */
static void host_part(char *out, size_t cap)
{
    char h[256];
    size_t i, k = 0;
    if (gethostname(h, sizeof h) != 0)
        h[0] = '\0';
    h[sizeof h - 1] = '\0';
    for (i = 0; h[i] != '\0' && i < 64 && k + 1 < cap; i++) {
        char c = h[i];
        int keep = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        out[k++] = keep ? c : '_';
    }
    out[k] = '\0';
}

/* A pid that was just alive and is no longer (reaped). */
static pid_t dead_pid(void)
{
    pid_t p = fork();
    if (p == 0)
        _exit(0);
    if (p > 0)
        (void)waitpid(p, NULL, 0);
    return p;
}

static void test_checkpoint_save_removes_stale_temporaries(void)
{
    char host[80], path[128], name[256];
    char dead_own[512], live[512], self[512], other_host[512], other_path[512], old_style[512];
    char not_tmp[512];
    diffuse_net *n = small_net(), *m = NULL;
    pid_t dead = dead_pid(), child;
    int pipefd[2];
    ASSERT_TRUE(n != NULL && dead > 0);
    ASSERT_TRUE(pipe(pipefd) == 0);
    child = fork(); /* alive until we close the pipe */
    if (child == 0) {
        char c;
        close(pipefd[1]);
        (void)read(pipefd[0], &c, 1);
        _exit(0);
    }
    close(pipefd[0]);
    ASSERT_TRUE(child > 0);
    host_part(host, sizeof host);
    in_dir(path, sizeof path, "x.ckpt");
#define MAKE_TMP(var, fmt, ...)                                                          \
    do {                                                                                 \
        snprintf(name, sizeof name, fmt, __VA_ARGS__);                                   \
        snprintf(var, sizeof var, "%s/%s", dir, name);                                   \
        ASSERT_TRUE(write_text(var, "partial"));                                         \
    } while (0)
    MAKE_TMP(dead_own, "x.ckpt.tmp-%s-%ld.Ab3dE9", host, (long)dead);
    MAKE_TMP(live, "x.ckpt.tmp-%s-%ld.Zz0000", host, (long)child);
    MAKE_TMP(self, "x.ckpt.tmp-%s-%ld.q1w2e3", host, (long)getpid());
    MAKE_TMP(other_host, "x.ckpt.tmp-%sX-%ld.Ab3dE9", host, (long)dead);
    MAKE_TMP(other_path, "y.ckpt.tmp-%s-%ld.Ab3dE9", host, (long)dead);
    MAKE_TMP(old_style, "x.ckpt.%s", "Ab3dE9");
    MAKE_TMP(not_tmp, "x.ckpt.tmp-%s-%ld.Ab3dE9.keep", host, (long)dead);
#undef MAKE_TMP
    ASSERT_OK(diffuse_checkpoint_save(path, n, NULL));
    ASSERT_TRUE(!exists(dead_own));
    ASSERT_TRUE(exists(live) && has_text(live, "partial"));
    ASSERT_TRUE(exists(self));
    ASSERT_TRUE(exists(other_host));
    ASSERT_TRUE(exists(other_path));
    ASSERT_TRUE(exists(old_style));
    ASSERT_TRUE(exists(not_tmp));
    ASSERT_EQ(entries(), 7); /* x.ckpt and the six kept */
    ASSERT_OK(diffuse_checkpoint_load(path, 1, &m, NULL, 0, NULL));
    diffuse_net_free(m);
    /* the live process ends: the next save removes its file too */
    close(pipefd[1]);
    (void)waitpid(child, NULL, 0);
    ASSERT_OK(diffuse_checkpoint_save(path, n, NULL));
    ASSERT_TRUE(!exists(live));
    ASSERT_EQ(entries(), 6);
    /* a save of a relative path (the current directory) cleans too */
    {
        char cwd[512];
        ASSERT_TRUE(getcwd(cwd, sizeof cwd) != NULL);
        ASSERT_TRUE(chdir(dir) == 0);
        snprintf(name, sizeof name, "x.ckpt.tmp-%s-%ld.Rel123", host, (long)dead);
        ASSERT_TRUE(write_text(name, "partial"));
        ASSERT_OK(diffuse_checkpoint_save("x.ckpt", n, NULL));
        ASSERT_TRUE(!exists(name));
        ASSERT_TRUE(chdir(cwd) == 0);
    }
    unlink(self);
    unlink(other_host);
    unlink(other_path);
    unlink(old_style);
    unlink(not_tmp);
    unlink(path);
    ASSERT_EQ(entries(), 0);
    diffuse_net_free(n);
}

int main(void)
{
    strcpy(dir, "/tmp/diffuse_target.XXXXXX");
    if (mkdtemp(dir) == NULL) {
        printf("cannot make a temporary directory\n0 passed, 1 failed, 0 skipped\n");
        return 1;
    }
    RUN(test_checkpoint_save_refuses_symlink);
    RUN(test_checkpoint_save_refuses_fifo_and_device);
    RUN(test_checkpoint_save_removes_stale_temporaries);
    {
        /* leave nothing behind, whatever failed */
        DIR *d = opendir(dir);
        struct dirent *e;
        char p[512];
        while (d != NULL && (e = readdir(d)) != NULL) {
            if (e->d_name[0] == '.')
                continue;
            snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
            (void)unlink(p);
        }
        if (d != NULL)
            closedir(d);
        (void)rmdir(dir);
    }
    return harness_finish();
}
