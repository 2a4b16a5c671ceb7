// A pool of large buffers for catch-up reads. A fresh 1 MiB malloc is usually fresh
// pages, and faulting them in (with the kernel zeroing each one) cost as much as the
// pread and the checksum together; reusing freed buffers avoids it. Buffers come in
// power-of-two classes from 64 KiB to 16 MiB; at most AQ_POOL_BYTES_MAX bytes are kept
// free. Every block carries a header with its class, so free needs only the pointer.
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include "caqueduct.h"

#define HEADER_BYTES 64
#define SMALLEST_CLASS_BYTES ((size_t)64 << 10)
#define CLASSES 9                      /* 64 KiB ... 16 MiB */
#define PER_CLASS_MAX 16
#define AQ_POOL_BYTES_MAX ((size_t)96 << 20)
#define NOT_POOLED (-1)

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static void *free_blocks[CLASSES][PER_CLASS_MAX];
static int free_counts[CLASSES];
static size_t free_bytes;

static size_t class_bytes(int class) { return SMALLEST_CLASS_BYTES << class; }

static int class_for(size_t size) {
    if (size < SMALLEST_CLASS_BYTES / 2 || size > class_bytes(CLASSES - 1)) return NOT_POOLED;
    int class = 0;
    while (class_bytes(class) < size) class++;
    return class;
}

static void *with_header(void *block, int class) {
    if (!block) return NULL;
    memcpy(block, &class, sizeof class);
    return (char *)block + HEADER_BYTES;
}

static int class_of(void *pointer) {
    int class;
    memcpy(&class, (char *)pointer - HEADER_BYTES, sizeof class);
    return class;
}

void *aq_pool_allocate(size_t size) {
    int class = class_for(size);
    if (class == NOT_POOLED) return with_header(malloc(size + HEADER_BYTES), NOT_POOLED);
    pthread_mutex_lock(&lock);
    if (free_counts[class] > 0) {
        void *block = free_blocks[class][--free_counts[class]];
        free_bytes -= class_bytes(class);
        pthread_mutex_unlock(&lock);
        return (char *)block + HEADER_BYTES;
    }
    pthread_mutex_unlock(&lock);
    return with_header(malloc(class_bytes(class) + HEADER_BYTES), class);
}

void aq_pool_deallocate(void *pointer) {
    if (!pointer) return;
    void *block = (char *)pointer - HEADER_BYTES;
    int class = class_of(pointer);
    if (class != NOT_POOLED) {
        pthread_mutex_lock(&lock);
        if (free_counts[class] < PER_CLASS_MAX && free_bytes + class_bytes(class) <= AQ_POOL_BYTES_MAX) {
            free_blocks[class][free_counts[class]++] = block;
            free_bytes += class_bytes(class);
            pthread_mutex_unlock(&lock);
            return;
        }
        pthread_mutex_unlock(&lock);
    }
    free(block);
}

void *aq_pool_reallocate(void *pointer, size_t old_size, size_t new_size) {
    if (!pointer) return aq_pool_allocate(new_size);
    int class = class_of(pointer);
    if (class != NOT_POOLED && new_size <= class_bytes(class)) return pointer;
    if (class == NOT_POOLED && class_for(new_size) == NOT_POOLED) {
        void *block = realloc((char *)pointer - HEADER_BYTES, new_size + HEADER_BYTES);
        return block ? (char *)block + HEADER_BYTES : NULL;
    }
    void *moved = aq_pool_allocate(new_size);
    if (!moved) return NULL;
    memcpy(moved, pointer, old_size < new_size ? old_size : new_size);
    aq_pool_deallocate(pointer);
    return moved;
}

void aq_pool_copy(void *destination, const void *source, size_t count) {
    memcpy(destination, source, count);
}
