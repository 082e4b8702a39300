//! `file:///<dir>`: the local filesystem.
//!
//! Two things only this backend knows:
//! - Reads: a data object is a file, read here `segments` sealed segments at a time,
//!   with `in_flight` reads ahead. object_store would stream it in 8 KiB reads, one
//!   blocking task each, which made a pull cost five times the CPU of the decryption.
//! - Crash leftovers: object_store writes `<path>#<n>` staging files and renames them
//!   into place; a write cut short leaves one that no listing shows.

use std::ops::Range;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt, TryStreamExt};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{GetResultPayload, ObjectStore};

use super::{map_read_error, ranged_get, Backend, Driver, OpenError, Removed, SealedStream};
use crate::{Result, StoreError};

/// A local write has no minimum part, so parts are small: an upload's write buffer is
/// part size × (parts in flight + 1), and 1 MiB parts hold eight parallel pushes to
/// 24 MiB rather than the 120 MiB of S3-sized parts.
const PART_SIZE: usize = 1024 * 1024;

/// How far ahead a read of a local data file goes.
#[derive(Debug, Clone, Copy)]
struct ReadAhead {
    /// Sealed segments per read (4 × 64 KiB segments = 256 KiB): whole segments, so
    /// the opener decrypts in the read buffer.
    segments: u64,
    /// Reads in flight ahead of the consumer, per stream.
    in_flight: usize,
}

const READ_AHEAD: ReadAhead = ReadAhead {
    segments: 4,
    in_flight: 2,
};

#[derive(Debug)]
struct Local {
    /// The directory the object store lives in (for the staging-file sweep).
    root: PathBuf,
    read_ahead: ReadAhead,
}

/// Opens (creating it if needed) the object store in `dir`.
pub(super) fn open(dir: &FsPath) -> Result<Backend, OpenError> {
    // LocalFileSystem::new_with_prefix requires the directory to exist.
    std::fs::create_dir_all(dir).map_err(|source| OpenError::CreateDir {
        path: dir.to_owned(),
        source,
    })?;
    let fs = LocalFileSystem::new_with_prefix(dir).map_err(|source| OpenError::ObjectStore {
        url: format!("file://{}", dir.display()),
        source,
    })?;
    let driver = Local {
        root: dir.to_owned(),
        read_ahead: READ_AHEAD,
    };
    Ok(Backend::new(Arc::new(fs), Arc::new(driver), PART_SIZE))
}

impl Driver for Local {
    fn read(
        &self,
        objects: Arc<dyn ObjectStore>,
        path: Path,
        range: Range<u64>,
        stride: u64,
    ) -> BoxFuture<'static, Result<SealedStream>> {
        let ahead = self.read_ahead;
        async move {
            let result = ranged_get(&objects, &path, range).await?;
            match result.payload {
                GetResultPayload::File(file, _) => {
                    let read_size = usize::try_from(ahead.segments.saturating_mul(stride))
                        .unwrap_or(usize::MAX);
                    Ok(read_file(file, result.range, read_size, ahead.in_flight))
                }
                GetResultPayload::Stream(_) => {
                    Ok(result.into_stream().map_err(map_read_error).boxed())
                }
            }
        }
        .boxed()
    }

    fn remove_staging(&self, cutoff: SystemTime) -> BoxFuture<'static, Result<Removed>> {
        let root = self.root.clone();
        async move {
            tokio::task::spawn_blocking(move || remove_staging(&root, cutoff))
                .await
                .map_err(|e| StoreError::Internal(format!("sweep of staging files: {e}")))?
                .map_err(|e| StoreError::Internal(format!("sweep of staging files: {e}")))
        }
        .boxed()
    }
}

/// Streams `range` of `file` in reads of `read_size` bytes, `in_flight` ahead. A file
/// shorter than the range (truncated behind the envelope's back) is an integrity
/// failure.
fn read_file(
    file: std::fs::File,
    range: Range<u64>,
    read_size: usize,
    in_flight: usize,
) -> SealedStream {
    let file = Arc::new(file);
    let step = read_size.max(1) as u64;
    let reads = (range.start..range.end)
        .step_by(step as usize)
        .map(move |at| {
            let len = (range.end - at).min(step) as usize;
            let file = file.clone();
            async move {
                // Allocated here, on a runtime worker, not on the blocking thread: with glibc
                // every thread that allocates gets an arena of its own, and 256 KiB buffers
                // spread over a dozen blocking threads' arenas doubled the peak RSS.
                let mut buf = bytes::BytesMut::zeroed(len);
                // What the page cache holds is copied right here; only bytes that would
                // wait for the disk go to a blocking thread. Handing every read to a
                // thread cost a pull more CPU in context switches than the decryption.
                let cached = read_cached(&file, &mut buf, at).map_err(file_error)?;
                if cached == len {
                    return Ok(buf.freeze());
                }
                tokio::task::spawn_blocking(move || {
                    use std::os::unix::fs::FileExt as _;
                    file.read_exact_at(&mut buf[cached..], at + cached as u64)
                        .map_err(file_error)?;
                    Ok(buf.freeze())
                })
                .await
                .map_err(|e| StoreError::Internal(format!("a local read's thread died: {e}")))?
            }
        });
    futures::stream::iter(reads)
        .buffered(in_flight.max(1))
        .boxed()
}

/// Reads into `buf` from `at` only what the page cache already holds (`RWF_NOWAIT`),
/// never waiting for the disk. Returns how many bytes were read; fewer than `buf.len()`
/// when the rest is not cached (or the kernel cannot say), so a blocking read must
/// finish the job. End of file before `buf` is full is an error.
fn read_cached(file: &std::fs::File, buf: &mut [u8], at: u64) -> std::io::Result<usize> {
    use rustix::io::{preadv2, Errno, ReadWriteFlags};
    let mut done = 0;
    while done < buf.len() {
        let mut slices = [std::io::IoSliceMut::new(&mut buf[done..])];
        match preadv2(file, &mut slices, at + done as u64, ReadWriteFlags::NOWAIT) {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => done += n,
            Err(Errno::INTR) => {}
            Err(Errno::AGAIN | Errno::OPNOTSUPP | Errno::NOSYS | Errno::INVAL) => break,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(done)
}

/// A local read failed: a file shorter than its envelope says was truncated behind
/// valv's back (integrity); anything else is the disk's, reported as the store's own
/// failure (object_store did not fail: this read bypasses it).
fn file_error(e: std::io::Error) -> StoreError {
    match e.kind() {
        std::io::ErrorKind::UnexpectedEof => StoreError::Integrity,
        _ => StoreError::Internal(format!("reading a local data file: {e}")),
    }
}

/// Whether a file name is an `object_store` local staging file: `<name>#<digits>`.
fn is_staging(name: &str) -> bool {
    name.rsplit_once('#')
        .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Removes staging files under `root` last modified before `cutoff`. Returns how many
/// and their bytes.
fn remove_staging(root: &FsPath, cutoff: SystemTime) -> std::io::Result<Removed> {
    let mut removed = Removed::default();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Some(entries) = unless_gone(std::fs::read_dir(&dir))? else {
            continue;
        };
        for entry in entries {
            // A file or directory can go while this walks (a write renaming its
            // staging file into place, another sweep): gone is not an error.
            let Some(entry) = unless_gone(entry)? else {
                continue;
            };
            let Some(kind) = unless_gone(entry.file_type())? else {
                continue;
            };
            if kind.is_dir() {
                dirs.push(entry.path());
                continue;
            }
            if !kind.is_file() || !entry.file_name().to_str().is_some_and(is_staging) {
                continue;
            }
            let Some(meta) = unless_gone(entry.metadata())? else {
                continue;
            };
            if meta.modified()? >= cutoff {
                continue;
            }
            if unless_gone(std::fs::remove_file(entry.path()))?.is_some() {
                removed.files += 1;
                removed.bytes += meta.len();
            }
        }
    }
    Ok(removed)
}

/// `Ok(None)` for a file that is no longer there.
fn unless_gone<T>(result: std::io::Result<T>) -> std::io::Result<Option<T>> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use super::*;

    async fn collect(mut stream: SealedStream) -> (Vec<u8>, Option<StoreError>) {
        let mut out = Vec::new();
        while let Some(item) = stream.next().await {
            match item {
                Ok(chunk) => out.extend_from_slice(&chunk),
                Err(e) => return (out, Some(e)),
            }
        }
        (out, None)
    }

    /// The page-cache path (RWF_NOWAIT on the runtime) and the blocking path must read the
    /// same bytes, and a file shorter than the range must end in `Integrity`.
    #[tokio::test]
    async fn local_reads_agree_cached_and_from_disk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let len = data.len() as u64;
        let open = || std::fs::File::open(&path).unwrap();
        const READ: usize =
            4 * crate::crypto::plan::sealed_segment_len(crate::crypto::SEGMENT_SIZE) as usize;
        const AHEAD: usize = 2;

        let whole = |(bytes, err): (Vec<u8>, Option<StoreError>)| {
            assert!(err.is_none(), "{err:?}");
            assert!(bytes == data, "bytes differ");
        };
        whole(collect(read_file(open(), 0..len, READ, AHEAD)).await);
        let (part, err) = collect(read_file(open(), 100..2_000_000, READ, AHEAD)).await;
        assert!(err.is_none(), "{err:?}");
        assert_eq!(part, data[100..2_000_000]);

        // Drop the file's pages from the page cache: reads must now go (at least partly)
        // to a blocking thread, and still return the same bytes.
        // The kernel may keep (or read back) pages under load, so the eviction is tried
        // a bounded number of times.
        let file = open();
        let mut buf = vec![0u8; READ];
        let mut cached = READ;
        for _ in 0..50 {
            file.sync_all().unwrap();
            rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed).unwrap();
            cached = read_cached(&file, &mut buf, 1_000_000).unwrap();
            if cached < READ {
                break;
            }
        }
        assert!(
            cached < READ,
            "the evicted file still read from the page cache (a filesystem without eviction?)"
        );
        whole(collect(read_file(open(), 0..len, READ, AHEAD)).await);

        let (got, err) = collect(read_file(open(), 0..len + 10, READ, AHEAD)).await;
        assert!(matches!(err, Some(StoreError::Integrity)), "{err:?}");
        assert!(got.len() as u64 <= len && got == data[..got.len()]);
    }

    #[test]
    fn staging_names_are_recognised() {
        assert!(is_staging("000001-abcd#1"));
        assert!(is_staging("envelope#12"));
        assert!(!is_staging("envelope"));
        assert!(!is_staging("a#b"));
        assert!(!is_staging("a#"));
    }
}
