#define _GNU_SOURCE
#include <string.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <errno.h>
#include <sys/uio.h>
#include <limits.h>
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

long long aq_heap_in_use(void) {
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33))
    struct mallinfo2 info = mallinfo2();
    return (long long)(info.uordblks + info.hblkhd);
#else
    return -1;
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

long long aq_write_gathered(int fd, struct iovec *vectors, int count, long long offset, int data_sync) {
    long long total = 0;
    int index = 0, calls = 0, synced = 0, dsync_unsupported = 0;
    while (index < count && vectors[index].iov_len == 0) index++;
    while (index < count) {
        int batch = count - index;
        if (batch > IOV_MAX) batch = IOV_MAX;
        int use_dsync = 0;
#if defined(__linux__) && defined(RWF_DSYNC)
        use_dsync = data_sync && !dsync_unsupported && calls == 0 && index + batch == count;
#endif
        ssize_t written;
        if (use_dsync) {
#if defined(__linux__) && defined(RWF_DSYNC)
            written = pwritev2(fd, vectors + index, batch, (off_t)(offset + total), RWF_DSYNC);
            if (written < 0 && errno == EOPNOTSUPP) {
                dsync_unsupported = 1;
                continue;
            }
#else
            written = -1;
#endif
        } else {
            written = pwritev(fd, vectors + index, batch, (off_t)(offset + total));
        }
        if (written < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        calls++;
        total += written;
        /* Step over what was written; a short write resumes inside a vector. */
        size_t left = (size_t)written;
        while (index < count && left >= vectors[index].iov_len) {
            left -= vectors[index].iov_len;
            index++;
        }
        if (index < count && left > 0) {
            vectors[index].iov_base = (char *)vectors[index].iov_base + left;
            vectors[index].iov_len -= left;
        }
        while (index < count && vectors[index].iov_len == 0) index++;
        synced = use_dsync && index == count;
    }
    if (data_sync && !(synced && calls == 1)) {
        if (fdatasync(fd) != 0) return -1;
    }
    return total;
}
