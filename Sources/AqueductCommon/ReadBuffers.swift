import CAqueduct
@_spi(CustomByteBufferAllocator) import NIOCore

/// The allocator for buffers of file reads: freed buffers of 64 KiB to 16 MiB are kept
/// (up to 96 MiB) and reused, instead of faulting in fresh pages for every read.
public enum ReadBuffers {
    public static let allocator = ByteBufferAllocator(
        allocate: { aq_pool_allocate($0) },
        reallocate: { aq_pool_reallocate($0, $1, $2) },
        deallocate: { aq_pool_deallocate($0) },
        copy: { aq_pool_copy($0, $1, $2) })
}
