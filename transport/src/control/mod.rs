//! The control socket: the protocol every service and client message follows ([`wire`],
//! [`conn`]), where the socket lives and who may connect ([`place`], [`peer`]), the service's
//! event loop ([`server`]) and the blocking client ([`client`]).

pub mod client;
pub mod conn;
pub mod peer;
pub mod place;
pub mod server;
#[cfg(feature = "tokio")]
pub mod tokio_client;
pub mod wire;
