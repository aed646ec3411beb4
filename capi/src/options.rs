//! `fh_options`: how `fh_connect` connects, as a plain C struct that `fh_options_init`
//! fills with the defaults.

use std::ffi::{c_char, CStr};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use firehose_consumer::{Options, Policy, Start};

use crate::error::Failure;

/// Where a reader starts.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum fh_start {
    /// At the live head: only what is published from now on.
    FH_START_NEWEST = 0,
    /// At the oldest record history holds, then live.
    FH_START_OLDEST = 1,
    /// At `from_seq`: what came before the live head is backfilled from history.
    FH_START_SEQ = 2,
}

/// How to connect. Fill it with `fh_options_init`, then change what you need.
#[repr(C)]
#[derive(Debug)]
#[allow(non_camel_case_types)]
pub struct fh_options {
    /// The control socket's path (NUL-terminated, any bytes); NULL: the default place,
    /// `$XDG_RUNTIME_DIR/firehose/firehose.sock`, else `/tmp/firehose-<uid>/firehose.sock`.
    /// Only read during `fh_connect`.
    pub socket: *const c_char,
    /// The name `firehose status` shows for this reader (UTF-8); NULL: `"libfirehose"`.
    /// Only read during `fh_connect`.
    pub name: *const c_char,
    /// Read losslessly: the service holds back for this reader, within its budget, and cuts
    /// it off if it stalls. Default false (lagging: the reader is told what it missed).
    pub lossless: bool,
    /// Fill what the ring did not deliver (the start, lag, a restart) from history, so
    /// every stored record arrives exactly once and in order. Default true.
    pub backfill: bool,
    /// Reconnect when the service restarts, and say so with events. Default true.
    pub reconnect: bool,
    /// Where to start: an `fh_start` value (an integer here, so that any value C puts in
    /// it is checked, not undefined behaviour). Default `FH_START_NEWEST`.
    pub start: u32,
    /// The first seq, for `FH_START_SEQ`.
    pub from_seq: u64,
}

/// Fills `options` with the defaults (see each field). Does nothing if `options` is NULL.
///
/// # Safety
/// `options` is NULL or points to writable memory for one `fh_options`.
#[no_mangle]
pub unsafe extern "C" fn fh_options_init(options: *mut fh_options) {
    if options.is_null() {
        return;
    }
    let defaults = fh_options {
        socket: std::ptr::null(),
        name: std::ptr::null(),
        lossless: false,
        backfill: true,
        reconnect: true,
        start: fh_start::FH_START_NEWEST as u32,
        from_seq: 0,
    };
    // SAFETY: `options` is not NULL, and the caller promises it points to writable memory
    // for one `fh_options`; `write` does not read (or drop) what was there.
    unsafe { options.write(defaults) };
}

/// The consumer's options for `o`, and the socket path they use.
///
/// # Safety
/// `o.socket` and `o.name` are NULL or NUL-terminated strings.
pub(crate) unsafe fn to_options(o: &fh_options) -> Result<Options, Failure> {
    let name = if o.name.is_null() {
        "libfirehose".to_string()
    } else {
        // SAFETY: not NULL, and NUL-terminated by the caller's promise.
        let name = unsafe { CStr::from_ptr(o.name) };
        name.to_str()
            .map_err(|_| Failure::invalid("fh_options.name is not UTF-8"))?
            .to_string()
    };
    let start = match o.start {
        s if s == fh_start::FH_START_NEWEST as u32 => Start::Newest,
        s if s == fh_start::FH_START_OLDEST as u32 => Start::Oldest,
        s if s == fh_start::FH_START_SEQ as u32 => Start::Seq(o.from_seq),
        s => {
            return Err(Failure::invalid(format!(
            "fh_options.start is {s}: expected FH_START_NEWEST, FH_START_OLDEST or FH_START_SEQ"
        )))
        }
    };
    let mut opts = Options::new()
        .name(name)
        .policy(if o.lossless {
            Policy::Lossless
        } else {
            Policy::Lagging
        })
        .start(start)
        .backfill(o.backfill)
        .reconnect(o.reconnect);
    if !o.socket.is_null() {
        // SAFETY: not NULL, and NUL-terminated by the caller's promise.
        let bytes = unsafe { CStr::from_ptr(o.socket) }.to_bytes();
        opts = opts.socket(PathBuf::from(std::ffi::OsStr::from_bytes(bytes)));
    }
    Ok(opts)
}
