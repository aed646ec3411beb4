//! The Firehose client library, the part a GUI links: connect to the service's control
//! socket, have the service's identity checked, receive the ring, and read file events
//! zero-copy, batch by batch (one [`Client::recv`] per GUI frame), following segment
//! switches and learning of every range it missed.
//!
//! ```no_run
//! use firehose_consumer::{default_socket_path, Client, ConnectOptions, Event, FileEvent};
//! let path = default_socket_path()?;
//! let mut client: Client<FileEvent> = Client::connect(&path, &ConnectOptions::default())?;
//! loop {
//!     for ev in &client.recv(1024)? {
//!         match ev {
//!             Event::Record(r) => println!("{} {:?}", r.seq(), r.access()?.path_os()),
//!             Event::Lagged { from, to } => println!("missed {from}..={to}"),
//!             Event::Gap { from, to, .. } => println!("never streamed {from}..={to}"),
//!         }
//!     }
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Backfilling what a reader missed from the service's history comes with the history
//! database; the protocol already carries the queries.

pub use firehose_transport::control::client::{reconnect, Client, ClientError, ConnectOptions};
pub use firehose_transport::control::peer::ConnectError;
pub use firehose_transport::control::place::default_socket_path;
#[cfg(feature = "tokio")]
pub use firehose_transport::control::tokio_client::AsyncClient;
pub use firehose_transport::control::wire::{
    DisconnectReason, HistoryQuery, Notice, QueryEnd, StartAt, Status,
};
pub use firehose_transport::record::{
    ArchivedEventKind, ArchivedFileEvent, EventKind, FileEvent, GapReason,
};
pub use firehose_transport::ring::{Batch, Event, Policy, ReadError, Reader, RecordRef};
