//! Crash cleanup: what a killed process or a lost race left behind, found and removed.
//!
//! A process killed mid-request can leave three kinds of garbage, none of which any
//! blob or session points to:
//! - data objects of an append or commit that never reached its state put,
//! - the state of a session that ended (`Committing` tombstones, `Cancelled` states
//!   whose deletion was cut short) once the grace period is over,
//! - on the local filesystem, the staging files (`<path>#<n>`) of writes cut short,
//!   which `object_store` hides from listings.
//!
//! The sweep only ever deletes what nothing names. It keeps every object that an
//! envelope or a live session names, and everything written after `now - grace`, so
//! writes in flight on any node (a data object is written before the state or envelope
//! that names it) are never touched. It deletes no path it read from an envelope: it
//! reads envelopes only to learn what to keep, so a forged envelope can make it keep
//! garbage, never delete content.
//!
//! Cost: one listing of `blobs/`, `uploads/` and `data/`, one GET per envelope and
//! per session. It runs at start in the background and on request (admin API); the
//! garbage collector of a later issue replaces it with an incremental one.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use chrono::Utc;
use object_store::path::Path;

use super::uploads::session_fate;
use super::{objects, Store};
use crate::crypto::envelope::Envelope;
use crate::paths::{sequence_of, ObjectPath};
use crate::Result;

/// What one sweep found and removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SweepReport {
    /// Envelopes read to learn which data objects are in use.
    pub envelopes: u64,
    /// Upload sessions seen, and how many of them were ended and removed.
    pub sessions: u64,
    pub sessions_removed: u64,
    /// Data objects named by nothing and older than the grace period, removed.
    pub data_objects_removed: u64,
    /// Local staging files of cut-short writes, removed.
    pub staging_files_removed: u64,
    /// Bytes freed by the two above.
    pub bytes_removed: u64,
}

/// What the sweep does with one upload session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fate {
    /// Open, or ended within the grace period: its data directory is in use.
    Keep,
    /// Ended before the grace period: remove its state; its data is kept only if an
    /// envelope names it.
    Remove,
}

impl Store {
    /// Removes what crashed or losing writers left behind (module docs): data objects
    /// no envelope or live session names, ended sessions, and local staging files,
    /// each only if written before `now - grace`.
    ///
    /// Fails, deleting nothing more, when a listing or a read fails: an object it could
    /// not judge is never deleted.
    pub async fn sweep(&self, grace: Duration) -> Result<SweepReport> {
        let started = Utc::now();
        let cutoff = started - chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::MAX);
        let mut report = SweepReport::default();

        // 1. Everything an envelope names is in use. Read first: a commit that lands
        //    after this listing still has its session (step 2) or is newer than the
        //    cutoff (step 3).
        let mut named: HashSet<String> = HashSet::new();
        let envelopes = objects::list_meta(self.objects(), &Path::from("blobs")).await?;
        for meta in envelopes
            .iter()
            .filter(|m| m.location.filename() == Some("envelope"))
        {
            report.envelopes += 1;
            let Some(bytes) = objects::get(self.objects(), &meta.location).await? else {
                continue;
            };
            // A damaged envelope names nothing usable; its data (if any) is garbage.
            // These envelopes are not authenticated (that needs the keys, and the sweep
            // must judge every envelope, whatever generation it is under): their names
            // are only ever *kept*, never deleted, so a forged envelope can at worst
            // keep garbage alive. Names of any form are kept, valid data objects or not.
            if let Ok(envelope) = Envelope::from_json(&bytes) {
                named.extend(envelope.parts.into_iter().map(|p| p.object));
            }
        }

        // 2. Sessions: ended ones go, the data directories of the others are in use.
        let live_dirs = self.sweep_session_states(cutoff, &mut report).await?;

        // 3. Data objects named by nothing, older than the cutoff.
        for meta in objects::list_meta(self.objects(), &Path::from("data")).await? {
            let path = meta.location.to_string();
            let in_live_session = parent(&meta.location).is_some_and(|d| live_dirs.contains(&d));
            if named.contains(&path) || in_live_session || meta.last_modified >= cutoff {
                continue;
            }
            objects::delete(self.objects(), &meta.location).await?;
            report.data_objects_removed += 1;
            report.bytes_removed += meta.size;
        }

        // 4. What only the backend sees (the local filesystem's staging files).
        let staging = self
            .backend()
            .remove_staging(std::time::SystemTime::from(cutoff))
            .await?;
        report.staging_files_removed = staging.files;
        report.bytes_removed += staging.bytes;
        if report.data_objects_removed + report.sessions_removed + report.staging_files_removed > 0
        {
            tracing::info!(?report, "sweep removed what interrupted writes left behind");
        }
        Ok(report)
    }

    /// Removes the state of upload sessions that ended (committed or cancelled) more
    /// than `grace` ago: the light part of [`Store::sweep`], one listing of `uploads/`
    /// and one GET per session, cheap enough to run often. Returns how many went.
    pub async fn sweep_sessions(&self, grace: Duration) -> Result<u64> {
        let cutoff =
            Utc::now() - chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::MAX);
        let mut report = SweepReport::default();
        self.sweep_session_states(cutoff, &mut report).await?;
        Ok(report.sessions_removed)
    }

    /// Step 2 of the sweep: the newest state of each session decides. Returns the data
    /// directories of the sessions kept.
    async fn sweep_session_states(
        &self,
        cutoff: chrono::DateTime<Utc>,
        report: &mut SweepReport,
    ) -> Result<HashSet<String>> {
        let mut newest: BTreeMap<String, (u64, Path)> = BTreeMap::new();
        for meta in objects::list_meta(self.objects(), &Path::from("uploads")).await? {
            let Some(seq) = sequence_of(&meta.location) else {
                continue;
            };
            let Some(dir) = parent(&meta.location) else {
                continue;
            };
            let entry = newest.entry(dir).or_insert((seq, meta.location.clone()));
            if seq > entry.0 {
                *entry = (seq, meta.location.clone());
            }
        }
        let mut live_dirs: HashSet<String> = HashSet::new();
        for (dir, (_, path)) in newest {
            report.sessions += 1;
            let Some(bytes) = objects::get(self.objects(), &path).await? else {
                continue;
            };
            let Some((blob, fate)) = session_fate(&bytes, cutoff) else {
                // Unreadable state: leave it and whatever it might name.
                tracing::warn!(%path, "sweep: upload session state does not parse; left alone");
                continue;
            };
            match fate {
                Fate::Keep => {
                    live_dirs.insert(ObjectPath::DataDir { blob: &blob }.to_path().to_string());
                }
                Fate::Remove => {
                    objects::delete_all(self.objects(), &Path::from(dir)).await?;
                    report.sessions_removed += 1;
                }
            }
        }
        Ok(live_dirs)
    }
}

/// The path of the directory holding `path`.
fn parent(path: &Path) -> Option<String> {
    path.as_ref()
        .rsplit_once('/')
        .map(|(dir, _)| dir.to_owned())
}
