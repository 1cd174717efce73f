//! The one error of the front end: a Kafka error code from the protocol's own table
//! (`kafka_protocol::ResponseError`) and, when the code alone does not say it, a
//! message that says what, where and what to do. Handlers, topic changes and the
//! forwarded parts pass it along whole (it crosses cores); the code and the message
//! go on the wire only where a response is built.
//!
//! Never: an error code that is not in `ResponseError`, or a code and a message
//! carried apart between modules.

use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use tidewater_io::LogError;

/// Why a request, or a partition's part of one, is refused or failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaError {
    kind: ResponseError,
    /// For the client (the response's error message, where it has one) and the log;
    /// `None` where the code says it all and the response carries no message.
    message: Option<String>,
}

impl KafkaError {
    /// `kind`, with a message for the client and the log.
    pub fn new(kind: ResponseError, message: impl Into<String>) -> KafkaError {
        KafkaError {
            kind,
            message: Some(message.into()),
        }
    }

    /// `kind` alone: the response carries its code and no message.
    pub fn bare(kind: ResponseError) -> KafkaError {
        KafkaError {
            kind,
            message: None,
        }
    }

    /// KAFKA_STORAGE_ERROR: this server could not read or write what it keeps (a
    /// partition, `topics.json`), or another core did not answer.
    pub fn storage(message: impl Into<String>) -> KafkaError {
        KafkaError::new(ResponseError::KafkaStorageError, message)
    }

    /// UNKNOWN_TOPIC_OR_PARTITION for a topic this server does not have.
    pub fn unknown_topic(name: &str) -> KafkaError {
        KafkaError::new(
            ResponseError::UnknownTopicOrPartition,
            format!("there is no topic {name}"),
        )
    }

    pub fn kind(&self) -> ResponseError {
        self.kind
    }

    /// The code on the wire.
    pub fn code(&self) -> i16 {
        self.kind.code()
    }

    /// The message for the response's `error_message` field, if there is one.
    pub fn message(&self) -> Option<StrBytes> {
        self.message.clone().map(StrBytes::from_string)
    }
}

impl std::fmt::Display for KafkaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.message {
            Some(m) => f.write_str(m),
            None => write!(f, "{}", self.kind),
        }
    }
}

impl std::error::Error for KafkaError {}

/// A failed append or read: MESSAGE_TOO_LARGE for a batch the log cannot take,
/// else KAFKA_STORAGE_ERROR; the message is the log's, naming the file.
impl From<&LogError> for KafkaError {
    fn from(e: &LogError) -> KafkaError {
        let mut inner = e;
        while let LogError::Shared(shared) = inner {
            inner = shared.as_ref();
        }
        let kind = match inner {
            LogError::BatchTooLarge { .. } => ResponseError::MessageTooLarge,
            _ => ResponseError::KafkaStorageError,
        };
        KafkaError::new(kind, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_come_from_the_protocol_table_and_bare_errors_carry_no_message() {
        let e = KafkaError::new(ResponseError::PolicyViolation, "topic t is protected");
        assert_eq!(
            (e.code(), e.to_string()),
            (44, "topic t is protected".into())
        );
        assert_eq!(e.message().as_deref(), Some("topic t is protected"));
        let bare = KafkaError::bare(ResponseError::NotLeaderOrFollower);
        assert_eq!(bare.code(), 6);
        assert_eq!(bare.message(), None);
        assert_eq!(KafkaError::storage("x").code(), 56);
    }
}
