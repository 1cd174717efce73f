//! CRC-32C (Castagnoli) on the hot paths: every frame the journal writes and every
//! frame read back, every produced batch checked, every batch the load generator
//! seals. `crc-fast` interleaves the CPU's crc32 instruction with carry-less
//! multiplication folds (AVX-512 VPCLMULQDQ where the CPU has it, chosen at run
//! time; inputs of 256 bytes or less take the crc32 instruction alone). It ran at
//! twice the `crc32c` crate's speed on 6 KiB on the machine of `docs/benchmarks.md`
//! (`cargo bench --bench checksum`). Both give the same values, so cold paths keep
//! the `crc32c` crate.

use crc_fast::{CrcAlgorithm, Digest};

/// The CRC-32C of `bytes`.
#[inline]
pub fn crc32c(bytes: &[u8]) -> u32 {
    crc_fast::checksum(CrcAlgorithm::Crc32Iscsi, bytes) as u32
}

/// The CRC-32C of `head` followed by `tail`, as if they were one slice.
#[inline]
pub fn crc32c_pair(head: &[u8], tail: &[u8]) -> u32 {
    let mut d = Digest::new(CrcAlgorithm::Crc32Iscsi);
    d.update(head);
    d.update(tail);
    d.finalize() as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_values_are_the_crc32c_crates() {
        let data: Vec<u8> = (0..70_000u32).map(|i| (i * 31 + 7) as u8).collect();
        for len in [0, 1, 3, 44, 63, 64, 300, 4096, 6144, 65_537, 70_000] {
            assert_eq!(crc32c(&data[..len]), crc32c::crc32c(&data[..len]), "{len}");
            for split in [0, 1, len / 2, len] {
                let (h, t) = data[..len].split_at(split.min(len));
                assert_eq!(
                    crc32c_pair(h, t),
                    crc32c::crc32c(&data[..len]),
                    "{len} at {split}"
                );
            }
        }
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
    }
}
