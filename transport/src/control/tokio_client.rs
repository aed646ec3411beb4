//! The client for tokio applications (feature `tokio`): the same connection as the blocking
//! [`Client`], waiting on its wake pipe and socket through tokio's `AsyncFd` instead of
//! `poll`. The handshake runs on a blocking thread (it takes one round trip).

use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;

use rkyv::Archive;
use tokio::io::unix::AsyncFd;

use super::client::{Client, ClientError, ConnectOptions, Step};
use crate::ring::Batch;

/// A connected reader for tokio.
pub struct AsyncClient<T> {
    inner: Client<T>,
    sock: AsyncFd<OwnedFd>,
    wake: Option<AsyncFd<OwnedFd>>,
}

impl<T> std::fmt::Debug for AsyncClient<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncClient")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<T: Archive + Send + 'static> AsyncClient<T> {
    /// Connects as [`Client::connect`] does, without blocking the runtime.
    ///
    /// # Errors
    /// As [`Client::connect`]; an I/O error if the fds cannot be registered with tokio.
    pub async fn connect(path: PathBuf, opts: ConnectOptions) -> Result<Self, ClientError> {
        let p = path.clone();
        let inner = tokio::task::spawn_blocking(move || Client::<T>::connect(&p, &opts))
            .await
            .map_err(|e| ClientError::Io {
                path: path.clone(),
                source: std::io::Error::other(e),
            })??;
        Self::from_client(inner)
    }
}

/// Registers an owned fd for readability.
fn register(fd: OwnedFd) -> std::io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: an `OwnedFd` is a valid open fd that stays open, referring to the same open
    // file description, until it is dropped, and its `as_raw_fd` always returns that fd.
    unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
        .map_err(|e| e.into_parts().1)
}

impl<T: Archive> AsyncClient<T> {
    /// Wraps a connected blocking client.
    ///
    /// # Errors
    /// [`ClientError::Io`] if its fds cannot be registered with the tokio reactor.
    pub fn from_client(mut inner: Client<T>) -> Result<Self, ClientError> {
        let io = |source| ClientError::Io {
            path: PathBuf::new(),
            source,
        };
        // Duplicates: tokio registers them with its reactor; the client keeps its own.
        let sock = register(inner.socket_fd().try_clone_to_owned().map_err(io)?).map_err(io)?;
        let wake = match inner.reader_mut().wake_fd() {
            Some(fd) => Some(register(fd.as_fd().try_clone_to_owned().map_err(io)?).map_err(io)?),
            None => None,
        };
        Ok(AsyncClient { inner, sock, wake })
    }

    /// The blocking client inside (status, queries, notices).
    pub fn inner(&mut self) -> &mut Client<T> {
        &mut self.inner
    }

    /// Waits until events are ready and hands out up to `max`, as [`Client::recv`].
    ///
    /// # Errors
    /// As [`Client::recv`].
    pub async fn recv(&mut self, max: usize) -> Result<Batch<'_, T>, ClientError> {
        loop {
            match self.inner.step(max)? {
                Step::Ready => break,
                Step::WaitSocket => {
                    self.readable(false).await?;
                }
                Step::WaitRing => {
                    if self.inner.reader_mut().prepare_wait() {
                        let r = self.readable(true).await;
                        self.inner
                            .reader_mut()
                            .finish_wait(*r.as_ref().unwrap_or(&false));
                        r?;
                    }
                }
            }
        }
        Ok(self.inner.take_batch())
    }

    /// Waits until the socket (or, with `ring`, the wake pipe) is readable. Returns true if
    /// it was the wake pipe.
    async fn readable(&self, ring: bool) -> Result<bool, ClientError> {
        let io = |source| ClientError::Io {
            path: PathBuf::new(),
            source,
        };
        let wake = self.wake.as_ref().filter(|_| ring);
        Ok(tokio::select! {
            r = self.sock.readable() => {
                r.map_err(io)?.clear_ready();
                false
            }
            r = async { wake.expect("guarded").readable().await }, if wake.is_some() => {
                r.map_err(io)?.clear_ready();
                true
            }
        })
    }
}
