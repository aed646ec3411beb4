//! The OS layer: everything Linux-specific the ring needs, in one place, so that a port to
//! another OS has one module to replace.
//!
//! - sealed memfds ([`memfd`]): create, seal, check seals and size, map;
//! - the wake pipe ([`pipe`]): a non-blocking write end for the producer, a read end the
//!   reader polls.

pub(crate) mod memfd;
pub(crate) mod pipe;
