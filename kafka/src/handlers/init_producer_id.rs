//! InitProducerId for idempotent producers (no transactions): a producer id unique in
//! this process and, because it starts from the clock, across restarts; epoch 0, or
//! the next epoch when a producer asks to bump its own.

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use kafka_protocol::ResponseError;
use std::sync::atomic::{AtomicI64, Ordering};

/// Producer ids: milliseconds since the epoch << 16, then counting. Shared by all
/// cores (this is not a hot path: once per producer).
static NEXT_PRODUCER_ID: AtomicI64 = AtomicI64::new(0);

fn next_producer_id() -> i64 {
    let floor = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_millis() as i64)
        << 16;
    let mut current = NEXT_PRODUCER_ID.load(Ordering::SeqCst);
    loop {
        let next = current.max(floor) + 1;
        match NEXT_PRODUCER_ID.compare_exchange(current, next, Ordering::SeqCst, Ordering::SeqCst) {
            Ok(_) => return next,
            Err(actual) => current = actual,
        }
    }
}

pub fn handle(req: &InitProducerIdRequest) -> InitProducerIdResponse {
    let transactional = req
        .transactional_id
        .as_ref()
        .is_some_and(|t| !t.0.as_str().is_empty());
    if transactional {
        // Transactions are not implemented: say so rather than pretend.
        return InitProducerIdResponse::default()
            .with_error_code(ResponseError::TransactionalIdAuthorizationFailed.code())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
    }
    let (id, epoch) = if req.producer_id.0 >= 0 && req.producer_epoch >= 0 {
        (req.producer_id.0, req.producer_epoch.saturating_add(1))
    } else {
        (next_producer_id(), 0)
    };
    InitProducerIdResponse::default()
        .with_producer_id(ProducerId(id))
        .with_producer_epoch(epoch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn producer_ids_are_unique_and_bumps_keep_the_id() {
        let a = handle(
            &InitProducerIdRequest::default()
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1),
        );
        let b = handle(
            &InitProducerIdRequest::default()
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1),
        );
        assert_ne!(a.producer_id, b.producer_id);
        assert!(a.producer_id.0 > 0);
        let bumped = handle(
            &InitProducerIdRequest::default()
                .with_producer_id(a.producer_id)
                .with_producer_epoch(0),
        );
        assert_eq!(
            (bumped.producer_id, bumped.producer_epoch),
            (a.producer_id, 1)
        );
    }
}
