//! Where a blob's bytes are in its sealed form: plaintext ranges to segments, segments
//! to sealed offsets (each sealed segment is its plaintext plus a [`TAG_LEN`] tag), and
//! sealed offsets to the data objects (parts) that hold them. The only place in the
//! crate that does tag arithmetic.

use std::ops::Range;

use super::segment::{sealed_len, segment_count};
use super::TAG_LEN;

/// Sealed bytes of one full segment: `segment_size` plaintext bytes and the tag.
pub const fn sealed_segment_len(segment_size: u32) -> u64 {
    segment_size as u64 + TAG_LEN as u64
}

/// The sealed length of each data part of a blob of `size` bytes whose parts hold
/// `part_segments` segments each, in order: every segment is full except the blob's
/// very last. `None` when the parts do not add up to the blob's segment count (an
/// envelope that would not open anyway), or the segment size is 0.
pub fn sealed_part_lengths(
    size: u64,
    segment_size: u32,
    part_segments: &[u64],
) -> Option<Vec<u64>> {
    if segment_size == 0 {
        return None;
    }
    let seg = u64::from(segment_size);
    let stride = sealed_segment_len(segment_size);
    let total_segments = segment_count(size, segment_size);
    let last_sealed =
        size.checked_sub(total_segments.checked_sub(1)?.checked_mul(seg)?)? + TAG_LEN as u64;
    let mut segments_before = 0u64;
    let mut lengths = Vec::with_capacity(part_segments.len());
    for &segments in part_segments {
        let full = segments.checked_mul(stride)?;
        segments_before = segments_before.checked_add(segments)?;
        let len = if segments_before == total_segments && segments > 0 {
            full - stride + last_sealed
        } else {
            full
        };
        lengths.push(len);
    }
    (segments_before == total_segments).then_some(lengths)
}

/// What to read of a blob: which sealed segments, and which plaintext bytes of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadPlan {
    pub segment_size: u32,
    /// Plaintext size of the whole blob.
    pub blob_size: u64,
    /// First segment whose ciphertext the input stream starts with.
    pub first_segment: u64,
    /// Plaintext bytes to drop from the start of the first segment.
    pub skip: u64,
    /// Plaintext bytes to yield in total.
    pub take: u64,
}

impl ReadPlan {
    /// The plan for plaintext bytes `start..end` (end exclusive, `start <= end <= blob_size`).
    /// For an empty range on an empty blob the plan still covers segment 0, so that the
    /// final empty segment is authenticated.
    ///
    /// Every plan covers at least one segment: an empty range `start..start` covers the
    /// segment holding byte `start` (the last segment when `start == blob_size`), which is
    /// opened and yields nothing. That keeps "a read authenticates before it answers"
    /// true even for empty reads. Out-of-bounds arguments are clamped to the blob (the
    /// caller answers 416 before it plans).
    ///
    /// # Panics
    /// When `segment_size` is 0.
    pub fn for_range(segment_size: u32, blob_size: u64, start: u64, end: u64) -> ReadPlan {
        let end = end.min(blob_size);
        let start = start.min(end);
        let seg = u64::from(segment_size);
        let last = segment_count(blob_size, segment_size) - 1;
        let first_segment = (start / seg).min(last);
        ReadPlan {
            segment_size,
            blob_size,
            first_segment,
            skip: start - first_segment * seg,
            take: end - start,
        }
    }

    /// Index one past the last segment the plan needs.
    pub fn end_segment(&self) -> u64 {
        let seg = u64::from(self.segment_size).max(1);
        if self.take == 0 {
            return self.first_segment + 1;
        }
        let last_byte = self.first_segment * seg + self.skip + self.take - 1;
        last_byte / seg + 1
    }

    /// Byte range of the sealed stream (over the concatenation of all data parts)
    /// that holds the plan's segments.
    pub fn sealed_range(&self) -> Range<u64> {
        let stride = sealed_segment_len(self.segment_size);
        let total = sealed_len(self.blob_size, self.segment_size.max(1));
        let start = (self.first_segment * stride).min(total);
        let end = (self.end_segment() * stride).min(total);
        start..end
    }

    /// Number of segments the plan opens.
    pub fn segments(&self) -> u64 {
        self.end_segment() - self.first_segment
    }

    /// The bytes of each data part the plan reads, for parts of the given sealed
    /// lengths laid end to end ([`sealed_part_lengths`]): `(part index, range within
    /// the part)`, in order, parts the plan does not touch left out. Read in this
    /// order, they are exactly [`ReadPlan::sealed_range`] of the sealed stream.
    pub fn part_ranges(&self, part_lengths: &[u64]) -> Vec<(usize, Range<u64>)> {
        let wanted = self.sealed_range();
        let mut ranges = Vec::new();
        let mut part_start = 0u64;
        for (index, &len) in part_lengths.iter().enumerate() {
            let part_end = part_start.saturating_add(len);
            let from = wanted.start.max(part_start);
            let to = wanted.end.min(part_end);
            if from < to {
                ranges.push((index, (from - part_start)..(to - part_start)));
            }
            part_start = part_end;
        }
        ranges
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use super::*;
    use crate::crypto::keys::BlobKeys;
    use crate::crypto::segment::Sealer;

    const SEG: u32 = 16;

    /// The sealed segments of a blob of `size` bytes, as the sealer writes them.
    fn sealed_segments(keys: &BlobKeys, size: usize) -> Vec<Vec<u8>> {
        let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let mut sealer = Sealer::new(keys.cipher(), keys.segment_size, 0, &[]);
        let mut out = Vec::new();
        sealer.push(&data, &mut out);
        out.push(sealer.finish());
        out.into_iter().map(|b| b.to_vec()).collect()
    }

    /// Cuts the segments into parts of `shape` segments each and returns the parts' bytes.
    fn parts(segments: &[Vec<u8>], shape: &[u64]) -> Vec<Vec<u8>> {
        let mut at = 0usize;
        shape
            .iter()
            .map(|&n| {
                let part = segments[at..at + n as usize].concat();
                at += n as usize;
                part
            })
            .collect()
    }

    #[test]
    fn part_lengths_match_the_sealer() {
        let keys = BlobKeys::generate(SEG);
        for (size, shape) in [
            (0usize, vec![1u64]),
            (1, vec![1]),
            (16, vec![1]),
            (17, vec![1, 1]),
            (40, vec![2, 1]),
            (40, vec![0, 3]),
            (48, vec![1, 1, 1]),
            (49, vec![3, 1]),
        ] {
            let segments = sealed_segments(&keys, size);
            let real: Vec<u64> = parts(&segments, &shape)
                .iter()
                .map(|p| p.len() as u64)
                .collect();
            assert_eq!(
                sealed_part_lengths(size as u64, SEG, &shape),
                Some(real),
                "size {size} shape {shape:?}"
            );
        }
        // Parts that do not hold the blob's segments, and a zero segment size.
        assert_eq!(sealed_part_lengths(40, SEG, &[2]), None);
        assert_eq!(sealed_part_lengths(40, SEG, &[2, 2]), None);
        assert_eq!(sealed_part_lengths(0, SEG, &[]), None);
        assert_eq!(sealed_part_lengths(40, 0, &[3]), None);
        assert_eq!(sealed_segment_len(SEG), 16 + TAG_LEN as u64);
    }

    /// Every range of blobs around segment boundaries, over several part shapes: the
    /// part ranges read, in order, exactly the sealed segments the plan opens.
    #[test]
    fn part_ranges_cover_exactly_the_planned_segments() {
        let keys = BlobKeys::generate(SEG);
        for (size, shape) in [
            (0usize, vec![1u64]),
            (15, vec![1]),
            (16, vec![1]),
            (17, vec![2]),
            (33, vec![1, 2]),
            (40, vec![1, 1, 1]),
            (64, vec![3, 1]),
            (65, vec![2, 0, 3]),
        ] {
            let segments = sealed_segments(&keys, size);
            let data = parts(&segments, &shape);
            let lengths = sealed_part_lengths(size as u64, SEG, &shape).unwrap();
            for start in 0..=size as u64 {
                for end in start..=size as u64 {
                    let plan = ReadPlan::for_range(SEG, size as u64, start, end);
                    let read: Vec<u8> = plan
                        .part_ranges(&lengths)
                        .into_iter()
                        .flat_map(|(i, r)| data[i][r.start as usize..r.end as usize].to_vec())
                        .collect();
                    let first = plan.first_segment as usize;
                    let last = plan.end_segment() as usize;
                    assert_eq!(
                        read,
                        segments[first..last].concat(),
                        "size {size} shape {shape:?} range {start}..{end}"
                    );
                    assert_eq!(plan.take, end - start);
                    assert!(plan.segments() >= 1, "every plan opens a segment");
                }
            }
        }
    }

    #[test]
    fn plans_at_the_edges() {
        let stride = sealed_segment_len(SEG);
        // First segment only.
        let p = ReadPlan::for_range(SEG, 40, 0, 1);
        assert_eq!((p.first_segment, p.end_segment()), (0, 1));
        assert_eq!(p.sealed_range(), 0..stride);
        // Last, partial segment (8 bytes + tag).
        let p = ReadPlan::for_range(SEG, 40, 32, 40);
        assert_eq!((p.first_segment, p.end_segment(), p.skip), (2, 3, 0));
        assert_eq!(
            p.sealed_range(),
            2 * stride..2 * stride + 8 + TAG_LEN as u64
        );
        // Across a boundary: the byte before and after it.
        let p = ReadPlan::for_range(SEG, 40, 15, 17);
        assert_eq!((p.first_segment, p.end_segment(), p.skip), (0, 2, 15));
        assert_eq!(p.sealed_range(), 0..2 * stride);
        // Empty blob: the one empty final segment, a tag alone.
        let p = ReadPlan::for_range(SEG, 0, 0, 0);
        assert_eq!(p.sealed_range(), 0..TAG_LEN as u64);
        assert_eq!(
            p.part_ranges(&[TAG_LEN as u64]),
            vec![(0, 0..TAG_LEN as u64)]
        );
        // A part the plan does not reach is left out.
        let p = ReadPlan::for_range(SEG, 40, 33, 34);
        let lengths = sealed_part_lengths(40, SEG, &[2, 1]).unwrap();
        assert_eq!(p.part_ranges(&lengths), vec![(1, 0..8 + TAG_LEN as u64)]);
    }
}
