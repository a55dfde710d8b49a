/* Status codes, their names, and the thread-local detail message. */
#include "internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define DIFFUSE_MESSAGE_SIZE 256

static _Thread_local char diffuse_message[DIFFUSE_MESSAGE_SIZE];

const char *diffuse_strerror(int status)
{
    switch (status) {
#define DIFFUSE_STATUS_CASE_(name, value, text) \
    case value:                                  \
        return text;
        DIFFUSE_STATUS_MAP(DIFFUSE_STATUS_CASE_)
#undef DIFFUSE_STATUS_CASE_
    default:
        return "unknown status";
    }
}

const char *diffuse_last_error(void)
{
    return diffuse_message;
}

int diffuse__fail(int code, const char *func, const char *fmt, ...)
{
    va_list ap;
    int used = snprintf(diffuse_message, sizeof diffuse_message, "%s: ", func);
    if (used < 0 || (size_t)used >= sizeof diffuse_message)
        return code;
    va_start(ap, fmt);
    vsnprintf(diffuse_message + used, sizeof diffuse_message - (size_t)used, fmt, ap);
    va_end(ap);
    return code;
}

int diffuse__rename(int code, const char *from, const char *to)
{
    char out[DIFFUSE_MESSAGE_SIZE + 128];
    const size_t n = strlen(from);
    if (strncmp(diffuse_message, from, n) != 0 || diffuse_message[n] != ':')
        return diffuse__reprefix(code, to);
    snprintf(out, sizeof out, "%.100s%s", to, diffuse_message + n);
    memcpy(diffuse_message, out, sizeof diffuse_message - 1);
    diffuse_message[sizeof diffuse_message - 1] = '\0';
    return code;
}

int diffuse__reprefix(int code, const char *func)
{
    char detail[DIFFUSE_MESSAGE_SIZE], name[64], out[2 * DIFFUSE_MESSAGE_SIZE + 128];
    const char *colon = strstr(diffuse_message, ": ");
    size_t n = strlen(func);
    if (strncmp(diffuse_message, func, n) == 0 && diffuse_message[n] == ':')
        return code; /* already the caller's name */
    /* "inner: detail" becomes "func: detail (in inner)" */
    if (colon == NULL) {
        memcpy(detail, diffuse_message, sizeof detail);
        snprintf(out, sizeof out, "%.100s: %s", func, detail);
    } else {
        size_t inner = (size_t)(colon - diffuse_message);
        if (inner > sizeof name - 1)
            inner = sizeof name - 1;
        memcpy(name, diffuse_message, inner);
        name[inner] = '\0';
        memcpy(detail, colon + 2, strlen(colon + 2) + 1);
        snprintf(out, sizeof out, "%.100s: %s (in %s)", func, detail, name);
    }
    memcpy(diffuse_message, out, sizeof diffuse_message - 1);
    diffuse_message[sizeof diffuse_message - 1] = '\0';
    return code;
}
