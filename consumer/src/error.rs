//! [`FollowError`]: why a [`Follower`](crate::Follower) could not connect or go on.

use firehose_transport::control::client::ClientError;
use firehose_transport::control::place::PlaceError;
use firehose_transport::control::wire::DisconnectReason;

use crate::events::InstanceId;

/// Why a follower could not connect, or cannot go on.
///
/// # Examples
/// ```no_run
/// use firehose_consumer::{FollowError, Options};
/// match Options::new().connect() {
///     Ok(_) => {}
///     Err(FollowError::Client(e)) => eprintln!("cannot reach the service: {e}"),
///     Err(e) => eprintln!("{e}"),
/// }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FollowError {
    /// No socket path was given and the default one cannot be worked out.
    #[error("working out the default socket path: {0}")]
    Place(#[from] PlaceError),
    /// Connecting, reading or querying failed (not running, not allowed, refused, a
    /// protocol or ring error).
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The service serves another history instance: this follower's seqs mean nothing
    /// there. Start a new follower to read it.
    #[error(
        "the service's history is instance {found}, not {expected} that this follower \
         started with: its seqs do not continue ours"
    )]
    OtherInstance {
        /// The instance the follower started with.
        expected: InstanceId,
        /// The instance the service has.
        found: InstanceId,
    },
    /// The fd a [`PollFollower`](crate::PollFollower) hands to the run loop could not be
    /// made or set (the process is out of fds, or the kernel refused).
    #[error("the follower's wake fd: {what}: {source}")]
    WakeFd {
        /// The call that failed.
        what: &'static str,
        /// What the kernel said.
        source: std::io::Error,
    },
    /// The connection ended and reconnecting is off (or cannot help).
    #[error("disconnected: {reason}{}", if detail.is_empty() { String::new() } else { format!(" ({detail})") })]
    Disconnected {
        /// Why.
        reason: DisconnectReason,
        /// What the service or the OS said.
        detail: String,
    },
}

impl FollowError {
    /// True if the service could not be reached at all (not running, nothing at the path,
    /// not allowed), as opposed to a connection that ended.
    ///
    /// # Examples
    /// ```
    /// use firehose_consumer::FollowError;
    /// let e = FollowError::Disconnected {
    ///     reason: firehose_consumer::DisconnectReason::Gone,
    ///     detail: String::new(),
    /// };
    /// assert!(!e.is_unreachable());
    /// ```
    pub fn is_unreachable(&self) -> bool {
        matches!(self, FollowError::Client(ClientError::Connect(_)))
            || matches!(self, FollowError::Place(_))
    }
}
