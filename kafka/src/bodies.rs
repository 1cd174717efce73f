//! Request bodies read into recycled buffers.
//!
//! A fresh `vec![0; len]` per request zeroed every byte just before the socket read
//! wrote over it: about 5% of a core at 1M events/s. Bodies are handed out as
//! [`Bytes`] (the codecs slice them without copying, and a produce request's parts
//! may outlive the reader); when the last slice goes, the buffer returns to its
//! core's pool, still at its full length, so reusing it zeroes nothing.
//!
//! Bounded: a core keeps at most `POOL_BUFFERS_MAX` buffers and `POOL_BYTES_MAX`
//! bytes (`tidewater_kafka_request_buffers_pooled_bytes`); a buffer that would
//! exceed either is freed. Never holds a buffer that a `Bytes` still points into.

use bytes::Bytes;
use std::cell::RefCell;

const POOL_BUFFERS_MAX: usize = 64;
const POOL_BYTES_MAX: usize = 32 << 20;

#[derive(Default)]
struct Pool {
    free: Vec<Vec<u8>>,
    bytes: usize,
}

thread_local! {
    static POOL: RefCell<Pool> = RefCell::default();
}

/// A buffer of at least `len` initialized bytes (its first `len` are the caller's to
/// overwrite), recycled when one is free.
pub fn take(len: usize) -> Vec<u8> {
    let mut buf = POOL.with_borrow_mut(|p| {
        let b = p.free.pop().unwrap_or_default();
        p.bytes -= b.len();
        b
    });
    if buf.len() < len {
        // Grows (and zeroes) only the part never used before.
        buf.resize(len, 0);
    }
    buf
}

/// The first `len` bytes of `buf` as `Bytes`; `buf` returns to this core's pool (or
/// the pool of the core that drops the last slice) once no slice of it is left.
pub fn freeze(buf: Vec<u8>, len: usize) -> Bytes {
    debug_assert!(len <= buf.len());
    Bytes::from_owner(Pooled { buf, len })
}

/// Bytes a core's pool holds now (for its gauge).
pub fn pooled_bytes() -> usize {
    POOL.with_borrow(|p| p.bytes)
}

struct Pooled {
    buf: Vec<u8>,
    len: usize,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        // `try_with`: a thread that is exiting has no pool left; the buffer is freed.
        let _ = POOL.try_with(|p| {
            let mut p = p.borrow_mut();
            if p.free.len() < POOL_BUFFERS_MAX && p.bytes + buf.len() <= POOL_BYTES_MAX {
                p.bytes += buf.len();
                p.free.push(buf);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_return_when_the_last_slice_goes_and_stay_bounded() {
        let before = pooled_bytes();
        let mut buf = take(100);
        buf[..5].copy_from_slice(b"hello");
        let body = freeze(buf, 5);
        let part = body.slice(1..3);
        drop(body);
        assert_eq!(pooled_bytes(), before, "a slice still points into it");
        assert_eq!(&part[..], b"el");
        drop(part);
        assert_eq!(pooled_bytes(), before + 100);
        // Reused without shrinking: its old bytes are still there.
        let again = take(10);
        assert!(again.len() >= 100);
        assert_eq!(pooled_bytes(), before);
        drop(again);

        // More than the byte bound is freed, not pooled.
        let big: Vec<Bytes> = (0..4)
            .map(|_| freeze(take(POOL_BYTES_MAX / 3), 1))
            .collect();
        drop(big);
        assert!(pooled_bytes() <= POOL_BYTES_MAX);
        let many: Vec<Bytes> = (0..POOL_BUFFERS_MAX + 10)
            .map(|_| freeze(take(1), 1))
            .collect();
        drop(many);
        POOL.with_borrow(|p| assert!(p.free.len() <= POOL_BUFFERS_MAX));
    }
}
