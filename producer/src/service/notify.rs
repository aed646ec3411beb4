//! Telling systemd the service is ready (`Type=notify`): one datagram, `READY=1`, on the
//! socket `$NOTIFY_SOCKET` names (a path, or `@name` in the abstract namespace). Without the
//! variable (not started by systemd) nothing is sent.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Sends `state` (`READY=1`, `STOPPING=1`, `STATUS=...`) to the service manager, if one
/// asked for it. Failures are logged, never fatal: the service works without.
pub fn notify(state: &str) {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET").filter(|v| !v.is_empty()) else {
        return;
    };
    let result = (|| -> std::io::Result<()> {
        let sock = UnixDatagram::unbound()?;
        let bytes = std::os::unix::ffi::OsStrExt::as_bytes(target.as_os_str());
        let addr = match bytes.strip_prefix(b"@") {
            Some(name) => SocketAddr::from_abstract_name(name)?,
            None => SocketAddr::from_pathname(&target)?,
        };
        sock.send_to_addr(state.as_bytes(), &addr)?;
        Ok(())
    })();
    if let Err(e) = result {
        tracing::warn!(
            "cannot tell the service manager {state:?} through NOTIFY_SOCKET={}: {e}",
            target.to_string_lossy()
        );
    }
}
