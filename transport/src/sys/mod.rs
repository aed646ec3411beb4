//! The OS layer: everything Linux-specific the ring and the control socket need, in one
//! place, so that a port to another OS has one module to replace.
//!
//! - sealed memfds ([`memfd`]): create, seal, check seals and size, map;
//! - the wake pipe ([`pipe`]): a non-blocking write end for the producer, a read end the
//!   reader polls;
//! - peer credentials ([`creds`], `SO_PEERCRED`), what `/proc` says of other processes
//!   ([`procfs`]), the open-file limit ([`rlimit`]) and `flock` ([`lock`]).

pub(crate) mod creds;
pub(crate) mod lock;
pub(crate) mod memfd;
pub(crate) mod pipe;
pub(crate) mod procfs;
pub(crate) mod rlimit;
