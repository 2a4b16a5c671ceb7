#define _GNU_SOURCE
#include <string.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <errno.h>
#include <sys/uio.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif
#include "caqueduct.h"

const void *aq_find_bytes(const void *haystack, size_t haystack_length, const void *needle, size_t needle_length) {
    return memmem(haystack, haystack_length, needle, needle_length);
}

int aq_start_writeback(int fd, long long offset, long long length) {
#if defined(__linux__)
    return sync_file_range(fd, (off64_t)offset, (off64_t)length, SYNC_FILE_RANGE_WRITE);
#else
    (void)fd; (void)offset; (void)length;
    return 0;
#endif
}

int aq_raise_thread_priority(int amount) {
#if defined(__linux__)
    pid_t tid = (pid_t)syscall(SYS_gettid);
    int current = getpriority(PRIO_PROCESS, (id_t)tid);
    return setpriority(PRIO_PROCESS, (id_t)tid, current - amount);
#else
    (void)amount;
    return -1;
#endif
}

void aq_tune_allocator(long mmap_threshold_bytes, long trim_threshold_bytes) {
#if defined(__GLIBC__)
    mallopt(M_MMAP_THRESHOLD, (int)mmap_threshold_bytes);
    mallopt(M_TRIM_THRESHOLD, (int)trim_threshold_bytes);
#else
    (void)mmap_threshold_bytes; (void)trim_threshold_bytes;
#endif
}

int aq_set_thread_io_priority(int io_class, int level) {
#if defined(__linux__) && defined(SYS_ioprio_set)
    static __thread int done;
    if (done) return 0;
    pid_t tid = (pid_t)syscall(SYS_gettid);
    /* IOPRIO_WHO_PROCESS = 1; value = class << 13 | level */
    int result = (int)syscall(SYS_ioprio_set, 1, (int)tid, (io_class << 13) | level);
    if (result == 0) done = 1;
    return result;
#else
    (void)io_class; (void)level;
    return -1;
#endif
}

long long aq_write_data_sync(int fd, const void *bytes, size_t length, long long offset) {
#if defined(__linux__) && defined(RWF_DSYNC)
    struct iovec vector = { (void *)bytes, length };
    ssize_t written = pwritev2(fd, &vector, 1, (off_t)offset, RWF_DSYNC);
    if (written >= 0 || errno != EOPNOTSUPP) return (long long)written;
#endif
    ssize_t plain = pwrite(fd, bytes, length, (off_t)offset);
    if (plain < 0) return -1;
    if (fdatasync(fd) != 0) return -1;
    return (long long)plain;
}
