//! A core's request memory: bytes of request bodies and of answers not yet written,
//! over all its connections, at most `request_memory_bytes_max`.
//!
//! A request takes its body's bytes as they arrive, not as announced: a peer that
//! announces 100 MiB and sends nothing holds nothing, and one that sends slowly holds
//! only what it sent, for at most `request_timeout_ms`. A Fetch takes the most its
//! answer may hold before reading and gives back what the answer did not use. Every
//! byte goes back when the answer is written or the connection closes.

use glommio::sync::Semaphore;
use std::rc::Rc;

/// Bytes a body is read in at most, each taken from the budget before it is read:
/// what a peer that stops sending can hold above what it sent.
pub const BODY_CHUNK_BYTES: usize = 64 << 10;

/// One request's share of its core's request memory.
pub struct Budget {
    memory: Rc<Semaphore>,
    bytes: u64,
}

impl Budget {
    pub fn new(memory: Rc<Semaphore>) -> Budget {
        Budget { memory, bytes: 0 }
    }

    /// Takes `bytes` more, waiting while other requests hold the budget.
    pub async fn grow(&mut self, bytes: usize) -> Result<(), String> {
        self.memory
            .acquire(bytes as u64)
            .await
            .map_err(|e| format!("request memory budget closed: {e}"))?;
        self.bytes += bytes as u64;
        Ok(())
    }

    /// Gives back all but `bytes`.
    pub fn shrink_to(&mut self, bytes: usize) {
        let keep = (bytes as u64).min(self.bytes);
        self.memory.signal(self.bytes - keep);
        self.bytes = keep;
    }

    pub fn bytes(&self) -> usize {
        self.bytes as usize
    }
}

impl Drop for Budget {
    fn drop(&mut self) {
        self.memory.signal(self.bytes);
    }
}
