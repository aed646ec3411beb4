//! The Firehose service's parts, as a library so that tests and benchmarks can drive them:
//!
//! - [`filters`]: filter documents (TOML) compiled into one matcher, reloaded live;
//! - [`watch`]: the file watcher (notify/inotify), rename pairing, scans of new directories;
//! - [`index`]: the tree index of what is on disk, its journal, and reconcile after a blind
//!   period;
//! - [`history`]: the history database (SQLite, WAL), its writer thread and its queries;
//! - [`lease`]: the seq lease that keeps seqs unique across crashes;
//! - [`service`]: the service that ties them together (`firehosed`), its options and install.

pub mod filters;
pub mod history;
pub mod index;
pub mod lease;
pub mod service;
pub mod watch;
