//! [`FollowStream`] (feature `tokio`): a [`Follower`] as an async `Stream` of owned events.
//!
//! The follower runs on its own thread (it blocks on the ring's wake pipe and on history
//! queries) and hands batches to the stream through a bounded channel. If the
//! application stops polling, the channel fills, the thread waits, and the ring moves on
//! without it: a lagging follower then reports (or, with backfill, fills) what it missed,
//! so a slow task never holds the service back (G5).

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::error::FollowError;
use crate::follow::Follower;
use crate::owned::OwnedEvent;

/// Batches in flight between the follower's thread and the stream.
const CHANNEL_BATCHES: usize = 16;

/// An async stream of [`OwnedEvent`]s (see [`Follower::into_stream`]). Ends after the
/// first error. Dropping it stops the follower's thread within 200 ms.
///
/// # Examples
/// ```no_run
/// # async fn run() -> Result<(), firehose_consumer::FollowError> {
/// use futures_core::Stream;
/// let mut s = firehose_consumer::follow_from(1)?.into_stream();
/// let ev = std::future::poll_fn(|cx| std::pin::Pin::new(&mut s).poll_next(cx)).await;
/// println!("{ev:?}");
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct FollowStream {
    rx: tokio::sync::mpsc::Receiver<Result<Vec<OwnedEvent>, FollowError>>,
    buf: VecDeque<OwnedEvent>,
}

impl Follower {
    /// Moves the follower to a thread of its own and returns its events as a `Stream`.
    ///
    /// # Panics
    /// If the OS cannot start a thread.
    ///
    /// # Examples
    /// ```no_run
    /// let stream = firehose_consumer::Options::new().connect()?.into_stream();
    /// # Ok::<(), firehose_consumer::FollowError>(())
    /// ```
    pub fn into_stream(mut self) -> FollowStream {
        let (tx, rx) = tokio::sync::mpsc::channel(CHANNEL_BATCHES);
        std::thread::Builder::new()
            .name("firehose-follow".into())
            .spawn(move || {
                while !tx.is_closed() {
                    match self.recv_timeout(4096, Duration::from_millis(200)) {
                        Ok(evs) => {
                            let v: Vec<OwnedEvent> = evs.map(|e| e.to_owned_event()).collect();
                            if !v.is_empty() && tx.blocking_send(Ok(v)).is_err() {
                                break;
                            }
                        }
                        Err(e) => {
                            let _ = tx.blocking_send(Err(e));
                            break;
                        }
                    }
                }
            })
            .expect("spawning the follower's thread");
        FollowStream {
            rx,
            buf: VecDeque::new(),
        }
    }
}

impl futures_core::Stream for FollowStream {
    type Item = Result<OwnedEvent, FollowError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if let Some(e) = self.buf.pop_front() {
                return Poll::Ready(Some(Ok(e)));
            }
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(Ok(v))) => self.buf.extend(v),
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
