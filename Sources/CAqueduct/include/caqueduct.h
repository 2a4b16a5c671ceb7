#ifndef AQUEDUCT_C_H
#define AQUEDUCT_C_H
// Small C helpers for hot paths Swift has no intrinsic or libc binding for.
#include <stddef.h>
#include <stdint.h>

/// Extends `crc` (the finished CRC-32C of the bytes before, 0 for none) over
/// `length` bytes at `data` and returns the finished CRC-32C of all of them.
/// Castagnoli polynomial (0x1EDC6F41, reflected 0x82F63B78), as in Kafka's
/// RecordBatch v2, iSCSI and ext4.
uint32_t aq_crc32c_extend(uint32_t crc, const void *data, size_t length);

/// 1 when the hardware instruction (SSE4.2 crc32) is used, 0 for the table.
int aq_crc32c_is_hardware(void);

/* The CRC-32C of A followed by B, from crc(A), crc(B) and B's length in bytes. */
uint32_t aq_crc32c_combine(uint32_t crc_a, uint32_t crc_b, uint64_t length_b);

/// The portable table implementation, exposed so tests can compare both paths.
uint32_t aq_crc32c_extend_portable(uint32_t crc, const void *data, size_t length);

/// The first occurrence of `needle` in `haystack` (glibc memmem), or NULL.
const void *aq_find_bytes(const void *haystack, size_t haystack_length, const void *needle, size_t needle_length);

/// Starts writeback of a file range without waiting for it (Linux sync_file_range
/// with SYNC_FILE_RANGE_WRITE), so a later fdatasync has little left to do. Returns 0
/// or -1 with errno set; a no-op returning 0 where the call does not exist.
int aq_start_writeback(int fd, long long offset, long long length);

/// Lowers the calling thread's nice value (raises its scheduling weight) by `amount`;
/// 0 on success, -1 when not permitted.
int aq_raise_thread_priority(int amount);

/// Tells glibc's allocator to keep large freed blocks (no mmap for blocks under
/// `mmap_threshold_bytes`, no trimming of the heap under `trim_threshold_bytes`), so
/// buffers of read chunks are reused instead of faulted in again for every read.
void aq_tune_allocator(long mmap_threshold_bytes, long trim_threshold_bytes);

/* Bytes the allocator has handed out and not had back (glibc's mallinfo2: in-use
   heap chunks plus mmapped ones); -1 where unknown. RSS minus this is memory freed
   but kept by the allocator. */
long long aq_heap_in_use(void);

/// Sets the calling thread's I/O priority (Linux ioprio): class 1 real time, 2 best
/// effort, 3 idle; level 0 (highest) to 7. Done once per thread; 0 on success.
int aq_set_thread_io_priority(int io_class, int level);

/* Writes the `count` vectors one after another at `offset` (pwritev, IOV_MAX at a time,
   short writes resumed; `vectors` is modified). With `data_sync`, the bytes are durable
   on return: one pwritev2(RWF_DSYNC) when one call wrote everything, else an fdatasync
   at the end. Returns the bytes written or -1 with errno. */
/* aq_decompress results. */
#define AQ_CODEC_UNAVAILABLE (-1) /* the codec's system library is not installed */
#define AQ_CODEC_CORRUPT (-2)     /* the input is not valid for the codec */
#define AQ_CODEC_TOO_LARGE (-3)   /* the output would pass the limit (or memory ran out) */

/* Decompresses a Kafka record batch payload compressed with `codec` (1 gzip, 2 snappy,
   3 lz4, 4 zstd) into a new malloc'ed buffer (free() it) of at most `limit` bytes.
   Returns 0 or one of the AQ_CODEC_ errors. */
int aq_decompress(int codec, const void *input, size_t length, size_t limit, void **output, size_t *output_length);

struct iovec;
long long aq_write_gathered(int fd, struct iovec *vectors, int count, long long offset, int data_sync);

/// A pool of large buffers (64 KiB to 16 MiB) reused across reads, for a custom
/// ByteBufferAllocator: the four functions NIO's allocator takes.
void *aq_pool_allocate(size_t size);
void *aq_pool_reallocate(void *pointer, size_t old_size, size_t new_size);
void aq_pool_deallocate(void *pointer);
void aq_pool_copy(void *destination, const void *source, size_t count);

#endif
