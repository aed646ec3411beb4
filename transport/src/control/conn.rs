//! The protocol as two sans-IO state machines, after quinn-proto: bytes and fds go in,
//! [`Transmit`]s and events come out; no socket and no clock inside. The blocking client
//! ([`super::client`]) and the service's event loop ([`super::server`]) move the bytes.

use std::collections::VecDeque;
use std::os::fd::OwnedFd;

use super::wire::{
    decode_body, encode_frame, ClientMsg, DecodeError, DisconnectReason, FrameDecoder, Hello,
    HistoryQuery, QueryEnd, ServerMsg, Status, Welcome, PROTOCOL_VERSION,
};
use crate::record::FileEvent;

/// Bytes to send, and the fds that go with their first byte.
#[derive(Debug)]
pub struct Transmit {
    /// One whole frame.
    pub bytes: Vec<u8>,
    /// Fds to attach (SCM_RIGHTS).
    pub fds: Vec<OwnedFd>,
}

/// The peer broke the protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A frame or message could not be decoded.
    #[error("undecodable message: {0}")]
    Decode(#[from] DecodeError),
    /// A message came when it may not.
    #[error("unexpected message: {0}")]
    Unexpected(&'static str),
    /// The peers speak different protocol versions.
    #[error("protocol version mismatch: we speak {ours}, the peer {theirs}")]
    Version {
        /// Ours.
        ours: u16,
        /// Theirs.
        theirs: u16,
    },
}

/// What the client learns.
#[derive(Debug)]
pub enum ClientEvent {
    /// The service accepted the hello: map the ring and read.
    Welcome {
        /// The welcome's fields.
        welcome: Welcome,
        /// The ring memfd.
        ring: OwnedFd,
        /// This reader's cursor page memfd.
        cursor: OwnedFd,
        /// The read end of this reader's wake pipe.
        wake: OwnedFd,
    },
    /// The ring moved to a new segment.
    SegmentSwitch {
        /// Its epoch.
        epoch: u64,
        /// Its memfd.
        ring: OwnedFd,
    },
    /// A notice.
    Notice(crate::record::Loss),
    /// Rows of a query.
    Rows {
        /// The query's id.
        id: u64,
        /// The rows.
        rows: Vec<FileEvent>,
    },
    /// A query finished.
    RowsEnd {
        /// The query's id.
        id: u64,
        /// How.
        end: QueryEnd,
    },
    /// The service's status.
    Status(Box<Status>),
    /// The connection is over.
    Disconnected {
        /// Why.
        reason: DisconnectReason,
        /// What the service said, if anything.
        detail: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientState {
    AwaitWelcome,
    Ready,
    Closed,
}

/// The client's side of one connection.
#[derive(Debug)]
pub struct ClientConn {
    dec: FrameDecoder,
    fds: VecDeque<OwnedFd>,
    out: VecDeque<Transmit>,
    events: VecDeque<ClientEvent>,
    state: ClientState,
}

impl ClientConn {
    /// A connection that starts by saying `hello`.
    pub fn new(hello: Hello) -> Self {
        let mut c = ClientConn {
            dec: FrameDecoder::default(),
            fds: VecDeque::new(),
            out: VecDeque::new(),
            events: VecDeque::new(),
            state: ClientState::AwaitWelcome,
        };
        c.send(&ClientMsg::Hello(hello));
        c
    }

    /// Queues a message.
    pub fn send(&mut self, msg: &ClientMsg) {
        if self.state != ClientState::Closed {
            self.out.push_back(Transmit {
                bytes: encode_frame(msg, 0),
                fds: Vec::new(),
            });
        }
    }

    /// True once the connection is over.
    pub fn is_closed(&self) -> bool {
        self.state == ClientState::Closed
    }

    /// The next bytes to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// Feeds bytes and the fds received with them.
    ///
    /// # Errors
    /// [`ProtocolError`] if the service broke the protocol; the connection is then closed
    /// (a `Disconnected { reason: ProtocolError }` event is queued).
    pub fn handle_input(&mut self, bytes: &[u8], fds: Vec<OwnedFd>) -> Result<(), ProtocolError> {
        if self.state == ClientState::Closed {
            return Ok(());
        }
        self.fds.extend(fds);
        self.dec.push(bytes);
        loop {
            let frame = match self.dec.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => return Ok(()),
                Err(e) => return Err(self.fail(e.into())),
            };
            let msg = match decode_body::<ServerMsg>(&frame.body) {
                Ok(m) => m,
                Err(e) => return Err(self.fail(e.into())),
            };
            let needed = msg.fd_count();
            if frame.fds != needed || self.fds.len() < needed {
                let e = DecodeError::Fds {
                    announced: frame.fds,
                    needed,
                    available: self.fds.len(),
                };
                return Err(self.fail(e.into()));
            }
            if let Err(e) = self.on_message(msg) {
                return Err(self.fail(e));
            }
        }
    }

    fn on_message(&mut self, msg: ServerMsg) -> Result<(), ProtocolError> {
        let ready = self.state == ClientState::Ready;
        let ev = match msg {
            ServerMsg::Welcome(w) => {
                if ready {
                    return Err(ProtocolError::Unexpected("a second welcome"));
                }
                if w.version != PROTOCOL_VERSION {
                    return Err(ProtocolError::Version {
                        ours: PROTOCOL_VERSION,
                        theirs: w.version,
                    });
                }
                self.state = ClientState::Ready;
                let mut take = || self.fds.pop_front().expect("fd count checked");
                ClientEvent::Welcome {
                    welcome: w,
                    ring: take(),
                    cursor: take(),
                    wake: take(),
                }
            }
            ServerMsg::SegmentSwitch { epoch } if ready => ClientEvent::SegmentSwitch {
                epoch,
                ring: self.fds.pop_front().expect("fd count checked"),
            },
            ServerMsg::Notice(n) if ready => ClientEvent::Notice(n),
            ServerMsg::Rows { id, rows } => ClientEvent::Rows { id, rows },
            ServerMsg::RowsEnd { id, end } => ClientEvent::RowsEnd { id, end },
            ServerMsg::Status(s) => ClientEvent::Status(s),
            ServerMsg::Bye { reason } => {
                self.state = ClientState::Closed;
                ClientEvent::Disconnected {
                    reason,
                    detail: String::new(),
                }
            }
            ServerMsg::Error { reason, detail } => {
                self.state = ClientState::Closed;
                ClientEvent::Disconnected { reason, detail }
            }
            ServerMsg::SegmentSwitch { .. } | ServerMsg::Notice(_) => {
                return Err(ProtocolError::Unexpected("ring message before welcome"));
            }
        };
        self.events.push_back(ev);
        Ok(())
    }

    fn fail(&mut self, e: ProtocolError) -> ProtocolError {
        let reason = match e {
            ProtocolError::Version { .. } => DisconnectReason::VersionMismatch,
            _ => DisconnectReason::ProtocolError,
        };
        self.state = ClientState::Closed;
        self.out.clear();
        self.fds.clear();
        self.events.push_back(ClientEvent::Disconnected {
            reason,
            detail: e.to_string(),
        });
        e
    }

    /// The socket reached end of file.
    pub fn handle_eof(&mut self) {
        if self.state != ClientState::Closed {
            self.state = ClientState::Closed;
            self.events.push_back(ClientEvent::Disconnected {
                reason: DisconnectReason::Gone,
                detail: "the service closed the connection without a word (it exited or crashed)"
                    .into(),
            });
        }
    }
}

/// What the service learns from a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerEvent {
    /// The client's hello (of the right version).
    Hello(Hello),
    /// A history query.
    Query(HistoryQuery),
    /// A status request.
    StatusRequest,
    /// The client said goodbye.
    Bye,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ServerState {
    AwaitHello,
    Ready,
    Closing,
}

/// The service's side of one connection.
#[derive(Debug)]
pub struct ServerConn {
    dec: FrameDecoder,
    out: VecDeque<Transmit>,
    events: VecDeque<ServerEvent>,
    state: ServerState,
    close_reason: Option<DisconnectReason>,
}

impl Default for ServerConn {
    fn default() -> Self {
        Self::new()
    }
}

impl ServerConn {
    /// A connection waiting for its hello.
    pub fn new() -> Self {
        ServerConn {
            dec: FrameDecoder::default(),
            out: VecDeque::new(),
            events: VecDeque::new(),
            state: ServerState::AwaitHello,
            close_reason: None,
        }
    }

    /// True once the service decided to close: send what is queued, then close.
    pub fn is_closing(&self) -> bool {
        self.state == ServerState::Closing
    }

    /// Why the connection is closing, once it is.
    pub fn close_reason(&self) -> Option<DisconnectReason> {
        self.close_reason
    }

    /// The next bytes to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    /// Whether anything is queued to send.
    pub fn has_transmit(&self) -> bool {
        !self.out.is_empty()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        self.events.pop_front()
    }

    /// Queues `msg` with its fds.
    ///
    /// # Panics
    /// If `fds` is not the number the message carries (a bug in the service).
    pub fn send(&mut self, msg: &ServerMsg, fds: Vec<OwnedFd>) {
        assert_eq!(fds.len(), msg.fd_count(), "fds for {msg:?}");
        if self.state != ServerState::Closing {
            self.out.push_back(Transmit {
                bytes: encode_frame(msg, fds.len()),
                fds,
            });
        }
    }

    /// Queues a last message saying why, and closes.
    pub fn close(&mut self, reason: DisconnectReason, detail: &str) {
        if self.state == ServerState::Closing {
            return;
        }
        let msg = if detail.is_empty() {
            ServerMsg::Bye { reason }
        } else {
            ServerMsg::Error {
                reason,
                detail: detail.to_string(),
            }
        };
        self.out.push_back(Transmit {
            bytes: encode_frame(&msg, 0),
            fds: Vec::new(),
        });
        self.state = ServerState::Closing;
        self.close_reason = Some(reason);
    }

    /// Bytes held that are not yet a whole message (bounded by the frame cap).
    pub fn buffered(&self) -> usize {
        self.dec.pending()
    }

    /// Feeds bytes read from the client (with no control buffer: a client cannot pass fds).
    ///
    /// # Errors
    /// [`ProtocolError`]; the connection is then closing with reason
    /// [`DisconnectReason::ProtocolError`] and the error queued for the client.
    pub fn handle_input(&mut self, bytes: &[u8]) -> Result<(), ProtocolError> {
        if self.state == ServerState::Closing {
            return Ok(());
        }
        self.dec.push(bytes);
        loop {
            let frame = match self.dec.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => return Ok(()),
                Err(e) => return Err(self.fail(e.into())),
            };
            if frame.fds != 0 {
                return Err(self.fail(
                    DecodeError::Fds {
                        announced: frame.fds,
                        needed: 0,
                        available: 0,
                    }
                    .into(),
                ));
            }
            let msg = match decode_body::<ClientMsg>(&frame.body) {
                Ok(m) => m,
                Err(e) => return Err(self.fail(e.into())),
            };
            match (self.state, msg) {
                (ServerState::AwaitHello, ClientMsg::Hello(h)) => {
                    if h.version != PROTOCOL_VERSION {
                        let detail = format!(
                            "this service speaks protocol version {PROTOCOL_VERSION}, the client {}",
                            h.version
                        );
                        self.close(DisconnectReason::VersionMismatch, &detail);
                        return Err(ProtocolError::Version {
                            ours: PROTOCOL_VERSION,
                            theirs: h.version,
                        });
                    }
                    self.state = ServerState::Ready;
                    self.events.push_back(ServerEvent::Hello(h));
                }
                (ServerState::AwaitHello, _) => {
                    return Err(self.fail(ProtocolError::Unexpected("a message before hello")));
                }
                (ServerState::Ready, ClientMsg::Hello(_)) => {
                    return Err(self.fail(ProtocolError::Unexpected("a second hello")));
                }
                (ServerState::Ready, ClientMsg::Query(q)) => {
                    self.events.push_back(ServerEvent::Query(q))
                }
                (ServerState::Ready, ClientMsg::StatusRequest) => {
                    self.events.push_back(ServerEvent::StatusRequest)
                }
                (ServerState::Ready, ClientMsg::Bye) => {
                    self.events.push_back(ServerEvent::Bye);
                    self.state = ServerState::Closing;
                    self.close_reason = Some(DisconnectReason::Bye);
                    return Ok(());
                }
                (ServerState::Closing, _) => return Ok(()),
            }
        }
    }

    fn fail(&mut self, e: ProtocolError) -> ProtocolError {
        self.close(DisconnectReason::ProtocolError, &e.to_string());
        e
    }
}

#[cfg(test)]
mod tests;
