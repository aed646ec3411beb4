//! The module's exceptions: `firehose.Error` and what it is subclassed into, so that a
//! caller can catch what it can act on (start the service, fix the permission, fix the
//! query) and read the message for the rest (it names the socket, uid or limit).

use firehose_consumer::{ClientError, ConnectError, FollowError};
use pyo3::exceptions::PyException;
use pyo3::PyErr;

pyo3::create_exception!(
    firehose,
    Error,
    PyException,
    "Any failure of the Firehose client."
);
pyo3::create_exception!(firehose, NotRunning, Error, "No service at the socket.");
pyo3::create_exception!(
    firehose,
    NotAllowed,
    Error,
    "The service refused this user, or the socket's owner is not trusted."
);
pyo3::create_exception!(
    firehose,
    Disconnected,
    Error,
    "The connection ended and reconnecting is off (or cannot help)."
);
pyo3::create_exception!(
    firehose,
    OtherInstance,
    Error,
    "The service now serves another history instance: this reader's seqs mean nothing there."
);
pyo3::create_exception!(
    firehose,
    InvalidQuery,
    Error,
    "The service could not run a history query (a bad glob or limit)."
);
pyo3::create_exception!(firehose, NoHistory, Error, "The service keeps no history.");

/// The exception for `e`, with its message.
pub(crate) fn to_py(e: FollowError) -> PyErr {
    let msg = e.to_string();
    match &e {
        FollowError::Place(_) => NotRunning::new_err(msg),
        FollowError::OtherInstance { .. } => OtherInstance::new_err(msg),
        FollowError::Disconnected { .. } => Disconnected::new_err(msg),
        FollowError::Client(c) => match c {
            ClientError::Connect(
                ConnectError::NotAllowed { .. } | ConnectError::UntrustedService { .. },
            ) => NotAllowed::new_err(msg),
            ClientError::Connect(ConnectError::NotRunning { .. }) => NotRunning::new_err(msg),
            ClientError::Disconnected { .. } => Disconnected::new_err(msg),
            _ => Error::new_err(msg),
        },
        _ => Error::new_err(msg),
    }
}

/// The exception for a failed status or query call on the connection.
pub(crate) fn client(e: ClientError) -> PyErr {
    to_py(FollowError::Client(e))
}
