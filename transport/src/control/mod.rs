//! The control socket: the protocol every service and client message follows ([`wire`],
//! [`conn`]), where the socket lives and who may connect ([`place`], [`peer`]), the service's
//! event loop ([`server`]), the blocking client ([`client`]) and, with the `tokio` feature,
//! the async client (`tokio_client`).
//!
//! A session:
//!
//! ```text
//!  client                                   service
//!    connect ───────────────────────────────► accept; SO_PEERCRED against the allow-list
//!    check the service's uid (own, root, trusted)
//!    Hello { version, name, policy, start } ─►
//!                                             attach a reader (lossless: rationed)
//!    ◄──────────────── Welcome + [ring, cursor page, wake pipe]
//!    map the ring read-only after checking seals and size; read it
//!    ◄──────────────── SegmentSwitch + [ring]   (rotation, resize, cut-off of another)
//!    ◄──────────────── Notice (a record::Loss: storage gap, lag, truncated)
//!    Query / StatusRequest ─────────────────► Rows..., RowsEnd / Status
//!    ◄──────────────── Bye { reason } or Error { reason, detail }; or EOF
//! ```
//!
//! No credit or pause messages: a lossless reader's released position already sits in its
//! cursor page, where the producer reads it with one load when (and only when) it runs out
//! of room. A credit message would be a slower, syscall-bound copy of that number, and a
//! pause message would let a reader hold the producer without the progress rule seeing it.
//! What the socket adds is what shared memory cannot do: fds, liveness (EOF), and reasons.

pub mod client;
pub mod conn;
pub mod peer;
pub mod place;
pub mod server;
#[cfg(feature = "tokio")]
pub mod tokio_client;
pub mod wire;
