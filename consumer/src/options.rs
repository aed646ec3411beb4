//! How to connect a [`Follower`]: [`Options`] (a builder) and [`Start`].

use std::path::PathBuf;
use std::time::Duration;

use firehose_transport::ring::Policy;

use crate::error::FollowError;
use crate::events::InstanceId;
use crate::follow::Follower;

/// Where a [`Follower`] starts reading.
///
/// # Examples
/// ```no_run
/// use firehose_consumer::{Options, Start};
/// let f = Options::new().start(Start::Oldest).connect()?;
/// # Ok::<(), firehose_consumer::FollowError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// At the live head: only what is published from now on.
    Newest,
    /// At this seq: what came before the live head is backfilled from history.
    Seq(u64),
    /// At the oldest seq history holds, then live.
    Oldest,
}

/// How to connect: socket path, client name, policy, where to start, and whether to
/// backfill and reconnect. Every setter consumes and returns the options (a builder).
///
/// Defaults: the socket at [`default_socket_path`](crate::default_socket_path), the name
/// `"firehose client"`, [`Policy::Lagging`], [`Start::Newest`], backfill on for
/// [`Start::Seq`] and [`Start::Oldest`] and off for [`Start::Newest`], reconnect on, pages
/// of 4096 rows.
///
/// # Examples
/// ```no_run
/// use firehose_consumer::{Options, Policy, Start};
/// let follower = Options::new()
///     .name("my-gui")
///     .policy(Policy::Lagging)
///     .start(Start::Seq(1000))
///     .connect()?;
/// # Ok::<(), firehose_consumer::FollowError>(())
/// ```
#[derive(Clone, Debug)]
pub struct Options {
    pub(crate) socket: Option<PathBuf>,
    pub(crate) name: String,
    pub(crate) policy: Policy,
    pub(crate) start: Start,
    pub(crate) backfill: Option<bool>,
    pub(crate) reconnect: bool,
    pub(crate) page: u64,
    pub(crate) instance: Option<InstanceId>,
    pub(crate) trusted_uids: Vec<u32>,
    pub(crate) timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            socket: None,
            name: "firehose client".into(),
            policy: Policy::Lagging,
            start: Start::Newest,
            backfill: None,
            reconnect: true,
            page: 4096,
            instance: None,
            trusted_uids: Vec::new(),
            timeout: Duration::from_secs(5),
        }
    }
}

impl Options {
    /// The defaults (see [`Options`]).
    ///
    /// # Examples
    /// ```
    /// let opts = firehose_consumer::Options::new();
    /// assert!(!opts.backfills());
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// The control socket's path.
    ///
    /// # Examples
    /// ```
    /// let opts = firehose_consumer::Options::new().socket("/run/firehose/firehose.sock");
    /// ```
    pub fn socket(mut self, path: impl Into<PathBuf>) -> Self {
        self.socket = Some(path.into());
        self
    }

    /// The name the service shows for this reader in its status.
    ///
    /// # Examples
    /// ```
    /// let opts = firehose_consumer::Options::new().name("my-gui");
    /// ```
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Lossless (the service holds back for this reader, within its budget; rationed) or
    /// lagging (never holds the service back; lag is reported and, with backfill, filled).
    ///
    /// # Examples
    /// ```
    /// use firehose_consumer::{Options, Policy};
    /// let opts = Options::new().policy(Policy::Lossless);
    /// ```
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// Where to start.
    ///
    /// # Examples
    /// ```
    /// use firehose_consumer::{Options, Start};
    /// assert!(Options::new().start(Start::Oldest).backfills());
    /// ```
    pub fn start(mut self, start: Start) -> Self {
        self.start = start;
        self
    }

    /// Whether ranges the ring did not deliver (the start, lag, gaps of the ring, a
    /// reconnect) are backfilled from history. Without it they are reported as
    /// [`Loss::Lagged`](crate::Loss::Lagged) or [`Loss::Gap`](crate::Loss::Gap).
    ///
    /// # Examples
    /// ```
    /// use firehose_consumer::Options;
    /// assert!(Options::new().backfill(true).backfills());
    /// ```
    pub fn backfill(mut self, on: bool) -> Self {
        self.backfill = Some(on);
        self
    }

    /// Whether backfill is on (explicitly, or by the start).
    ///
    /// # Examples
    /// ```
    /// use firehose_consumer::{Options, Start};
    /// assert!(Options::new().start(Start::Seq(5)).backfills());
    /// assert!(!Options::new().start(Start::Seq(5)).backfill(false).backfills());
    /// ```
    pub fn backfills(&self) -> bool {
        self.backfill.unwrap_or(self.start != Start::Newest)
    }

    /// Whether to reconnect (with backoff, 50 ms doubling up to 2 s) when the service goes
    /// away. Off: the disconnect ends the follower.
    ///
    /// # Examples
    /// ```
    /// let opts = firehose_consumer::Options::new().reconnect(false);
    /// ```
    pub fn reconnect(mut self, on: bool) -> Self {
        self.reconnect = on;
        self
    }

    /// Rows asked for per history query when backfilling (at least 1).
    ///
    /// # Examples
    /// ```
    /// let opts = firehose_consumer::Options::new().page_size(1024);
    /// ```
    pub fn page_size(mut self, rows: u64) -> Self {
        self.page = rows.max(1);
        self
    }

    /// The history instance this follower must read: a service of another instance is
    /// refused at connect ([`FollowError::OtherInstance`]). Without it, the first
    /// connection's instance is the one every reconnect must match.
    ///
    /// # Examples
    /// ```
    /// use firehose_consumer::{InstanceId, Options};
    /// let opts = Options::new().expect_instance(InstanceId([7; 16]));
    /// ```
    pub fn expect_instance(mut self, id: InstanceId) -> Self {
        self.instance = Some(id);
        self
    }

    /// Uids besides our own and root that the service may run as.
    ///
    /// # Examples
    /// ```
    /// let opts = firehose_consumer::Options::new().trust_uid(998);
    /// ```
    pub fn trust_uid(mut self, uid: u32) -> Self {
        self.trusted_uids.push(uid);
        self
    }

    /// How long a connect waits for the service's welcome.
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// let opts = firehose_consumer::Options::new().connect_timeout(Duration::from_secs(1));
    /// ```
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Connects and returns the follower.
    ///
    /// # Errors
    /// [`FollowError::Place`] (no default socket path), [`FollowError::Client`] (not running,
    /// not allowed, refused...), [`FollowError::OtherInstance`].
    ///
    /// # Examples
    /// ```no_run
    /// let mut f = firehose_consumer::Options::new().connect()?;
    /// # Ok::<(), firehose_consumer::FollowError>(())
    /// ```
    pub fn connect(self) -> Result<Follower, FollowError> {
        Follower::connect(self)
    }

    /// Connects, backfills from `seq` and then follows live: every stored record from
    /// `seq` on, exactly once and in order (see [`Follower`]).
    ///
    /// # Errors
    /// As [`connect`](Self::connect).
    ///
    /// # Examples
    /// ```no_run
    /// let mut f = firehose_consumer::Options::new().name("exporter").follow_from(1)?;
    /// # Ok::<(), firehose_consumer::FollowError>(())
    /// ```
    pub fn follow_from(self, seq: u64) -> Result<Follower, FollowError> {
        self.start(Start::Seq(seq)).backfill(true).connect()
    }
}
