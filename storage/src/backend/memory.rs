//! `memory://`: process memory, gone at exit. Reads are ranged GETs.

use std::sync::Arc;

use object_store::memory::InMemory;

use super::{Backend, Ranged};

/// An in-memory write has no minimum part, so parts are small: an upload's write
/// buffer is part size × (parts in flight + 1), and 1 MiB parts hold eight parallel
/// pushes to 24 MiB rather than the 120 MiB of S3-sized parts.
const PART_SIZE: usize = 1024 * 1024;

pub(super) fn open() -> Backend {
    Backend::new(Arc::new(InMemory::new()), Arc::new(Ranged), PART_SIZE)
}
