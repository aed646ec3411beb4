//! The Firehose client library, the part a GUI links. It connects to the service's control
//! socket, has the service's identity checked, maps the ring and reads file events
//! zero-copy, and fills what the ring did not deliver from the service's history.
//!
//! The main types and how data flows between them:
//!
//! ```text
//!  Options ──connect()/follow_from(seq)──► Follower (wraps a transport Client<FileEvent>)
//!     Follower::drain(max)   once per GUI frame, never waits for the ring ─┐
//!     Follower::recv(max)    waits for events                              ├─► Events: Event<'_>
//!     Follower::iter()       blocking iterator ──► OwnedEvent             ─┘     Record (zero-copy
//!     Follower::into_stream  async Stream (feature `tokio`) ──► OwnedEvent        &ArchivedFileEvent,
//!     Follower::into_background  its own thread, a bounded inbox ──► OwnedEvent
//!                                                                                or a history row)
//!                                                                                Gap, Lagged, Missing,
//!                                                                                Truncated, Disconnected,
//!                                                                                Reconnected, OtherInstance
//! ```
//!
//! With backfill on, ranges the ring did not deliver (the start, lag, the ring's gaps, a
//! reconnect after a service restart) are queried from history by seq range, a page at a
//! time, and handed out in their place: the application sees every stored record exactly
//! once and in order (DESIGN.md, G4).
//!
//! ```no_run
//! use firehose_consumer::{escape_path, Event, Loss, Options, Start};
//! let mut f = Options::new().name("my-gui").start(Start::Oldest).connect()?;
//! loop {
//!     for ev in f.recv(4096)? {
//!         match ev {
//!             Event::Record(r) => println!("{} {:?} {}", r.seq(), r.kind(), escape_path(r.path())),
//!             Event::Loss(Loss::Gap { from, to, reason }) => println!("{from}..={to} never stored: {reason:?}"),
//!             Event::Loss(Loss::Truncated { oldest }) => println!("history starts at {oldest}"),
//!             other => println!("{other:?}"),
//!         }
//!     }
//! }
//! # Ok::<(), firehose_consumer::FollowError>(())
//! ```
//!
//! The transport's own types are re-exported for what the follower does not wrap
//! ([`Client`], [`Status`], [`HistoryQuery`]...).

#![warn(missing_docs)]

mod backfill;
mod background;
mod error;
mod events;
mod follow;
mod iter;
mod live;
pub mod monitor;
mod options;
mod owned;
pub mod pages;
mod poll;
#[cfg(feature = "tokio")]
mod stream;
mod text;
pub mod time;
mod view;

pub use background::{Background, Gathered, StatusNow};
pub use error::FollowError;
pub use events::{Event, InstanceId, Record};
pub use follow::{follow_from, Follower};
pub use iter::Iter;
pub use options::{Options, Start};
pub use owned::OwnedEvent;
pub use poll::PollFollower;
#[cfg(feature = "tokio")]
pub use stream::FollowStream;
pub use text::{escape_path, unescape_path};
pub use view::Events;

pub use firehose_transport::control::client::{
    reconnect, Client, ClientError, ConnectOptions, QueryPage, QueryPages,
};
pub use firehose_transport::control::peer::ConnectError;
pub use firehose_transport::control::place::{
    client_socket_path, default_socket_path, PlaceError, SYSTEM_SOCKET,
};
#[cfg(feature = "tokio")]
pub use firehose_transport::control::tokio_client::AsyncClient;
pub use firehose_transport::control::wire::{
    DisconnectReason, HistoryQuery, QueryEnd, ReaderStatus, StartAt, Status, StatusCounters,
};
pub use firehose_transport::path_glob;
pub use firehose_transport::record::{
    ArchivedEventKind, ArchivedFileEvent, BlindInfo, BlindReason, EventKind, FileEvent, GapInfo,
    GapReason, Loss,
};
pub use firehose_transport::ring::{Policy, ReadError};
