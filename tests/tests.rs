//! Firehose's cross-process, fault and hostile-input tests: one test binary (see
//! `support/` for the child program they spawn).

mod control;
mod cross_process;
mod hostile;
mod socket_access;
mod watchdog;
