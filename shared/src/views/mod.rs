//! The read model: small projections that pages and the CLI read instead of every run.
//!
//! The write side (the state machine, conditional writes of runs and environment records)
//! stays the source of truth; each view here is derived from it idempotently, so a view that
//! is briefly behind is never wrong in a way a user can see, and the sweep repairs what a
//! crash left behind:
//!
//! - [`run_index`]: per pipeline, every run in the order it opened, in chunks of
//!   [`run_index::CHUNK`] entries, so a page of the newest runs (or of older ones, with a
//!   cursor) reads a handful of objects whatever the history.
//!
//! - [`control_room`]: what `/`, `/approvals` and `/pipelines/{name}` show, read from the
//!   index of runs, the index of unfinished runs and the environments' records.
//!
//! - [`release_log`]: per environment, month by month, every release with the commits it
//!   shipped and whether it failed; what the delivery figures ([`delivery`]) read.
//!
//! - [`cadence`]: per pipeline, the release cadence episode the sweep keeps.
//!
//! An environment's own record ([`crate::domain::Environment`]) is already a view of what runs
//! there; the approval page reads it with the run and the index.

pub mod cadence;
pub mod control_room;
pub mod delivery;
pub mod group_commit;
pub mod release_log;
pub mod run_index;

pub use run_index::{Cursor, PipelineRecord, RunEntry, RunPage};
