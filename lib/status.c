/* Status codes, their names, and the thread-local detail message. */
#include "internal.h"

#include <stdarg.h>
#include <stdio.h>

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
