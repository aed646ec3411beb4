//! `fh_error`, the typed result of every call, and the thread's last error message with the
//! context a user needs (which socket, which uid, which limit).

use std::cell::RefCell;
use std::ffi::{c_char, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

use firehose_consumer::{ClientError, ConnectError, FollowError};

/// What a call returned. `FH_OK` is 0; every other value is a failure, and
/// `fh_last_error()` says what failed in words.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum fh_error {
    /// Done.
    FH_OK = 0,
    /// A required pointer was NULL, a string was not UTF-8, or a value was out of range.
    FH_ERR_INVALID_ARGUMENT = 1,
    /// The service is not running, or nothing listens at the socket path.
    FH_ERR_NOT_RUNNING = 2,
    /// The service refused this process (its uid or gid is not allowed, or lossless reading
    /// is not allowed for it), or the socket's owner is not a trusted service.
    FH_ERR_NOT_ALLOWED = 3,
    /// The socket path is too long for a Unix socket (108 bytes on Linux).
    FH_ERR_PATH_TOO_LONG = 4,
    /// The connection ended (the service stopped, or cut this reader off); the message
    /// says why. With reconnect on (the default) this is not reported: the reader
    /// reconnects and says so with `FH_EVENT_DISCONNECTED` and `FH_EVENT_RECONNECTED`.
    FH_ERR_DISCONNECTED = 5,
    /// The service now serves another history instance than the one this reader started
    /// with: its seqs do not continue. Free the reader and connect again.
    FH_ERR_OTHER_INSTANCE = 6,
    /// The service did not answer in time.
    FH_ERR_TIMEOUT = 7,
    /// A system call failed, or the service sent something that is not the protocol.
    FH_ERR_IO = 8,
    /// A history query the service could not run (a bad glob).
    FH_ERR_INVALID_QUERY = 9,
    /// The service has no history.
    FH_ERR_NO_HISTORY = 10,
    /// A bug in this library (a Rust panic, caught at the border): please report it.
    FH_ERR_INTERNAL = 11,
}

thread_local! {
    static LAST: RefCell<CString> = RefCell::new(CString::default());
}

/// The last failure on this thread, in one line: what failed and why, with the socket
/// path, uid or limit involved. An empty string if no call on this thread has failed.
///
/// The string is owned by the library and stays valid until the next call on this thread
/// that fails; do not free it.
#[no_mangle]
pub extern "C" fn fh_last_error() -> *const c_char {
    LAST.with(|l| l.borrow().as_ptr())
}

/// The name of an error code, such as `"FH_ERR_NOT_RUNNING"` (static; never NULL;
/// `"FH_ERR_UNKNOWN"` for a number that is no `fh_error`).
#[no_mangle]
pub extern "C" fn fh_error_name(code: i32) -> *const c_char {
    use fh_error::*;
    let known = [
        (FH_OK, &b"FH_OK\0"[..]),
        (FH_ERR_INVALID_ARGUMENT, b"FH_ERR_INVALID_ARGUMENT\0"),
        (FH_ERR_NOT_RUNNING, b"FH_ERR_NOT_RUNNING\0"),
        (FH_ERR_NOT_ALLOWED, b"FH_ERR_NOT_ALLOWED\0"),
        (FH_ERR_PATH_TOO_LONG, b"FH_ERR_PATH_TOO_LONG\0"),
        (FH_ERR_DISCONNECTED, b"FH_ERR_DISCONNECTED\0"),
        (FH_ERR_OTHER_INSTANCE, b"FH_ERR_OTHER_INSTANCE\0"),
        (FH_ERR_TIMEOUT, b"FH_ERR_TIMEOUT\0"),
        (FH_ERR_IO, b"FH_ERR_IO\0"),
        (FH_ERR_INVALID_QUERY, b"FH_ERR_INVALID_QUERY\0"),
        (FH_ERR_NO_HISTORY, b"FH_ERR_NO_HISTORY\0"),
        (FH_ERR_INTERNAL, b"FH_ERR_INTERNAL\0"),
    ];
    // The code is an int from C, not trusted to be an `fh_error`: compared as a number.
    let name: &'static [u8] = known
        .iter()
        .find(|(e, _)| *e as i32 == code)
        .map_or(b"FH_ERR_UNKNOWN\0", |(_, n)| n);
    name.as_ptr().cast()
}

/// A failure: its code and its message.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) code: fh_error,
    pub(crate) message: String,
}

impl Failure {
    pub(crate) fn new(code: fh_error, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: message.into(),
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Failure::new(fh_error::FH_ERR_INVALID_ARGUMENT, message)
    }
}

impl From<FollowError> for Failure {
    fn from(e: FollowError) -> Self {
        let code = match &e {
            FollowError::Place(_) => fh_error::FH_ERR_NOT_RUNNING,
            FollowError::Client(c) => client_code(c),
            FollowError::OtherInstance { .. } => fh_error::FH_ERR_OTHER_INSTANCE,
            FollowError::Disconnected { .. } => fh_error::FH_ERR_DISCONNECTED,
            _ => fh_error::FH_ERR_IO,
        };
        Failure::new(code, e.to_string())
    }
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        Failure::new(client_code(&e), e.to_string())
    }
}

fn client_code(e: &ClientError) -> fh_error {
    match e {
        ClientError::Connect(c) => match c {
            ConnectError::NotAllowed { .. } | ConnectError::UntrustedService { .. } => {
                fh_error::FH_ERR_NOT_ALLOWED
            }
            ConnectError::PathTooLong { .. } => fh_error::FH_ERR_PATH_TOO_LONG,
            ConnectError::NotRunning { .. } => fh_error::FH_ERR_NOT_RUNNING,
            _ => fh_error::FH_ERR_IO,
        },
        ClientError::Disconnected { .. } => fh_error::FH_ERR_DISCONNECTED,
        ClientError::Timeout { .. } => fh_error::FH_ERR_TIMEOUT,
        _ => fh_error::FH_ERR_IO,
    }
}

/// Runs one call's body at the border: a failure becomes its code and this thread's last
/// message, and a panic becomes `FH_ERR_INTERNAL` instead of unwinding into C (which would
/// abort the host).
pub(crate) fn guard(body: impl FnOnce() -> Result<(), Failure>) -> fh_error {
    let failure = match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => return fh_error::FH_OK,
        Ok(Err(f)) => f,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Failure::new(
                fh_error::FH_ERR_INTERNAL,
                format!("internal error in libfirehose: {what}"),
            )
        }
    };
    // A message with a NUL in it (from a path) keeps what comes before the NUL.
    let mut bytes = failure.message.into_bytes();
    if let Some(nul) = bytes.iter().position(|&b| b == 0) {
        bytes.truncate(nul);
    }
    let message = CString::new(bytes).unwrap_or_default();
    LAST.with(|l| *l.borrow_mut() = message);
    failure.code
}
