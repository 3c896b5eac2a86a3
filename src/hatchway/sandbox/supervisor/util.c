/* Small helpers: the clock, errno names, a run's error message, and small files read and written whole. They call
 * only protocol.c (die); see the layering in supervisor.h. */
#include "supervisor.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * NS_PER_S + (uint64_t)ts.tv_nsec;
}

/* Symbolic names make failure messages greppable and independent of the libc's wording. */
static const char *errno_name(int e)
{
    switch (e) {
    case EPERM: return "EPERM";
    case ENOENT: return "ENOENT";
    case ESRCH: return "ESRCH";
    case EINTR: return "EINTR";
    case EIO: return "EIO";
    case ENXIO: return "ENXIO";
    case E2BIG: return "E2BIG";
    case ENOEXEC: return "ENOEXEC";
    case EBADF: return "EBADF";
    case ECHILD: return "ECHILD";
    case EAGAIN: return "EAGAIN";
    case ENOMEM: return "ENOMEM";
    case EACCES: return "EACCES";
    case EFAULT: return "EFAULT";
    case EBUSY: return "EBUSY";
    case EEXIST: return "EEXIST";
    case EXDEV: return "EXDEV";
    case ENODEV: return "ENODEV";
    case ENOTDIR: return "ENOTDIR";
    case EISDIR: return "EISDIR";
    case EINVAL: return "EINVAL";
    case ENFILE: return "ENFILE";
    case EMFILE: return "EMFILE";
    case ETXTBSY: return "ETXTBSY";
    case EFBIG: return "EFBIG";
    case ENOSPC: return "ENOSPC";
    case EROFS: return "EROFS";
    case EMLINK: return "EMLINK";
    case ENAMETOOLONG: return "ENAMETOOLONG";
    case ENOSYS: return "ENOSYS";
    case ENOTEMPTY: return "ENOTEMPTY";
    case ELOOP: return "ELOOP";
    case ELIBBAD: return "ELIBBAD";
    case EDQUOT: return "EDQUOT";
    case ESTALE: return "ESTALE";
    case EPROTO: return "EPROTO";
    default: return NULL;
    }
}

/* "ENOENT (No such file or directory)" */
void describe_errno(char *out, size_t size, int e)
{
    const char *name = errno_name(e);
    if (name)
        snprintf(out, size, "%s (%s)", name, strerror(e));
    else
        snprintf(out, size, "errno %d (%s)", e, strerror(e));
}

void set_error(struct run *r, const char *fmt, ...)
{
    if (r->error[0])
        return; /* the first failure is the one that explains the others */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->error, sizeof r->error, fmt, ap);
    va_end(ap);
}

void set_errno_error(struct run *r, const char *what, int e)
{
    char d[128];
    describe_errno(d, sizeof d, e);
    set_error(r, "%s: %s", what, d);
}

/* Read an open small file from its start, as a string; returns bytes read or -1 with errno set. A cgroup file
 * read again from offset 0 shows its current value. */
ssize_t read_open_file(int fd, char *buf, size_t size)
{
    size_t got = 0;
    while (got + 1 < size) {
        ssize_t k = pread(fd, buf + got, size - 1 - got, (off_t)got);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            return -1;
        if (k == 0)
            break;
        got += (size_t)k;
    }
    buf[got] = '\0';
    return (ssize_t)got;
}

/* Read a small file relative to a directory descriptor; returns bytes read or -1 with errno set. */
ssize_t read_file_at(int dirfd, const char *name, char *buf, size_t size)
{
    int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t got = read_open_file(fd, buf, size);
    int e = errno;
    close(fd);
    errno = e;
    return got;
}

bool parse_u64_text(const char *buf, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(buf, &end, 10);
    if (errno || end == buf)
        return false;
    *out = v;
    return true;
}

bool read_u64_at(int dirfd, const char *name, uint64_t *out)
{
    char buf[64];
    return read_file_at(dirfd, name, buf, sizeof buf) > 0 && parse_u64_text(buf, out);
}

/* Returns 0 or errno. */
int write_file_at(int dirfd, const char *name, const char *value)
{
    int fd = openat(dirfd, name, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return errno;
    size_t n = strlen(value);
    ssize_t k = write(fd, value, n);
    int e = k == (ssize_t)n ? 0 : (k < 0 ? errno : EIO);
    close(fd);
    return e;
}

/* "name 123" on its own line of a flat key/value file such as memory.oom_control. */
bool find_key_u64(const char *text, const char *key, uint64_t *out)
{
    size_t klen = strlen(key);
    for (const char *line = text; line && *line; line = strchr(line, '\n'), line = line ? line + 1 : NULL) {
        if (strncmp(line, key, klen) == 0 && line[klen] == ' ') {
            *out = strtoull(line + klen + 1, NULL, 10);
            return true;
        }
    }
    return false;
}

int open_dir(const char *path, const char *what)
{
    int fd = open(path, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        die("%s %s: %s", what, path, strerror(errno));
    return fd;
}
