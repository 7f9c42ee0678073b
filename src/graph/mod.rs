//! Reading the agent directory (blueprints, agent identities, agent users, agent risk) from
//! Microsoft Graph, and merging it with the operator's local file.
//!
//! The pieces, in the order a sync uses them: [`credential`] (the client credentials
//! flow), [`client`] (access token, bounded GETs, paging, retries), [`reader`] (the four
//! collections), [`mapping`] (Graph objects to directory entries), [`merge`](mod@merge) (local
//! overrides on top, provenance, revision) and [`sync`] (the periodic driver, its status and
//! metrics). [`diff`](mod@diff) compares two directories for `agentgate directory diff`. The design
//! and the Graph resources are described in `docs/directory-sync.md`.

pub mod client;
pub mod credential;
pub mod diff;
pub mod error;
pub mod mapping;
pub mod merge;
pub mod reader;
pub mod secret;
pub mod sync;

pub use client::{Deadline, GraphClient};
pub use diff::{diff, DirectoryDiff, EntityKind};
pub use error::GraphError;
pub use mapping::{GraphDirectory, ObjectCounts};
pub use merge::{
    merge, merge_owned, EntityProvenance, MergeOptions, MergedDirectory, Provenance,
    ProvenanceSummary, Source,
};
pub use reader::read_directory;
pub use secret::Secret;
pub use sync::{SyncDriver, SyncMetrics, SyncStatus, SyncedDirectory};
