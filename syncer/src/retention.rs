//! Byte-quota retention: which of a stream's oldest recordings must go.

/// Disk usage is accounted in whole 4 KiB blocks per recording, close to what a file system
/// allocates, so that many small recordings cannot overrun a quota.
pub const ACCOUNTING_BLOCK_BYTES: i64 = 4096;

/// `bytes` rounded up to a whole number of [`ACCOUNTING_BLOCK_BYTES`].
pub fn round_up(bytes: i64) -> i64 {
    debug_assert!(bytes >= 0);
    (bytes + ACCOUNTING_BLOCK_BYTES - 1) / ACCOUNTING_BLOCK_BYTES * ACCOUNTING_BLOCK_BYTES
}

/// How many of the oldest committed recordings (sizes in bytes, oldest first) to delete so that
/// their rounded total plus `other_bytes` (in-flight recordings, already rounded) fits in
/// `retain_bytes`. Deletes everything if even that does not fit.
pub fn oldest_to_delete(committed_bytes: &[i64], other_bytes: i64, retain_bytes: i64) -> usize {
    let mut usage: i64 = committed_bytes.iter().map(|&b| round_up(b)).sum::<i64>() + other_bytes;
    let mut n = 0;
    while usage > retain_bytes && n < committed_bytes.len() {
        usage -= round_up(committed_bytes[n]);
        n += 1;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_to_whole_blocks() {
        assert_eq!(round_up(0), 0);
        assert_eq!(round_up(1), 4096);
        assert_eq!(round_up(4096), 4096);
        assert_eq!(round_up(4097), 8192);
    }

    #[test]
    fn deletes_oldest_first_until_it_fits() {
        // Three recordings of one block each, quota of two blocks: one goes.
        assert_eq!(oldest_to_delete(&[1, 1, 1], 0, 8192), 1);
        // In-flight bytes count too.
        assert_eq!(oldest_to_delete(&[1, 1, 1], 4096, 8192), 2);
        assert_eq!(oldest_to_delete(&[1, 1, 1], 0, 12288), 0);
        // Nothing fits: everything committed goes, no more.
        assert_eq!(oldest_to_delete(&[1, 1], 1 << 20, 0), 2);
        assert_eq!(oldest_to_delete(&[], 1 << 20, 0), 0);
    }
}
