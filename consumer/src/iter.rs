//! [`Iter`]: a blocking iterator of owned events over a [`Follower`].

use std::collections::VecDeque;

use crate::error::FollowError;
use crate::follow::Follower;
use crate::owned::OwnedEvent;

/// A blocking iterator of [`OwnedEvent`]s (see [`Follower::iter`]). Ends after the first
/// error (a disconnect with reconnect off, another instance, a refusal).
///
/// # Examples
/// ```no_run
/// let mut f = firehose_consumer::follow_from(1)?;
/// for ev in f.iter().take(10) {
///     println!("{:?}", ev?);
/// }
/// # Ok::<(), firehose_consumer::FollowError>(())
/// ```
#[derive(Debug)]
pub struct Iter<'f> {
    follower: &'f mut Follower,
    buf: VecDeque<OwnedEvent>,
    done: bool,
}

impl Follower {
    /// A blocking iterator of owned events. For zero-copy records use
    /// [`recv`](Self::recv) or [`drain`](Self::drain).
    ///
    /// # Examples
    /// ```no_run
    /// let mut f = firehose_consumer::Options::new().connect()?;
    /// if let Some(ev) = f.iter().next() {
    ///     println!("{:?}", ev?);
    /// }
    /// # Ok::<(), firehose_consumer::FollowError>(())
    /// ```
    pub fn iter(&mut self) -> Iter<'_> {
        Iter {
            follower: self,
            buf: VecDeque::new(),
            done: false,
        }
    }
}

impl Iterator for Iter<'_> {
    type Item = Result<OwnedEvent, FollowError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(e) = self.buf.pop_front() {
                return Some(Ok(e));
            }
            if self.done {
                return None;
            }
            match self.follower.recv(1024) {
                Ok(evs) => self.buf.extend(evs.map(|e| e.to_owned_event())),
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
    }
}
