import AqueductAPI
import AqueductLog
import AqueductRecords
import AqueductStorage

extension BrokerError {
    /// Translates lower layers' errors into a code and a message for users.
    public static func from(_ error: any Error) -> BrokerError {
        switch error {
        case let error as BrokerError: return error
        case let error as LogError: return from(log: error)
        case let error as StorageError: return from(storage: error)
        case let error as RecordBatchError: return BrokerError(.invalidRecord, error.description)
        default: return BrokerError(.internalError, "\(error)")
        }
    }

    static func from(log error: LogError) -> BrokerError {
        switch error {
        case .offsetOutOfRange(let offset, let start, let end):
            BrokerError(.offsetOutOfRange, "offset \(offset) is outside [\(start), \(end))",
                hint: "read from an offset between the partition's start and end offsets")
        case .invalidBatch(.tooLarge(let bytes, let limit)):
            BrokerError(.recordTooLarge, "record batch of \(bytes) bytes exceeds the topic's limit of \(limit) bytes",
                hint: "send smaller records or raise the topic's batchBytesMax")
        case .invalidBatch(let batchError): BrokerError(.invalidRecord, batchError.description)
        case .emptyBatch: BrokerError(.invalidRecord, "a record batch must hold at least one record")
        case .invalidConfiguration(let why): BrokerError(.invalidConfig, why)
        case .logNotFound: BrokerError(.partitionNotFound, "the partition's log no longer exists")
        case .fenced, .noWriter: BrokerError(.notWritable, error.description, hint: "retry; the partition is changing writers")
        case .storage(let storageError): from(storage: storageError)
        case .metadata(let why): BrokerError(.storageError, "metadata: \(why)")
        case .closed: BrokerError(.unavailable, "the server is shutting down", hint: "retry against a running server")
        }
    }

    static func from(storage error: StorageError) -> BrokerError {
        switch error {
        case .corruptEntry, .dataLoss:
            BrokerError(.corruptData, error.description, hint: "the range is refused; truncate the partition past it or restore it")
        case .closed: BrokerError(.unavailable, "the server is shutting down", hint: "retry against a running server")
        case .ioFailure: BrokerError(.storageError, error.description, hint: "check the disk, then restart the server")
        case .replicasUnavailable: BrokerError(.unavailable, error.description, hint: "retry; `aqueduct cluster status` shows which nodes are down")
        case .entryTooLarge(let bytes, let limit):
            BrokerError(.recordTooLarge, "record batch of \(bytes) bytes exceeds the limit of \(limit) bytes")
        default: BrokerError(.storageError, error.description)
        }
    }
}
