//! `Record` and `Notice`: what a reader hands out one at a time. A record's path is a `str`
//! decoded as `os.fsdecode` does (bytes that are not UTF-8 become surrogate escapes, so
//! `os.fsencode(r.path)` gives the exact bytes back); `path_bytes` is the bytes themselves.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use firehose_consumer::{Event, Loss};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// One file event: `seq`, `time_ns`, `kind` ("create", "modify", "close_write",
/// "metadata", "remove", "rename", "overflow", "blind_start", "blind_end"), `path`,
/// `path_to` (a rename's new path, else None), `size` (None if unknown), `rule` (the
/// filter rule that matched), `reconciled` (found by a reconcile after a blind period).
#[pyclass(module = "firehose", frozen)]
#[derive(Debug)]
pub(crate) struct Record {
    #[pyo3(get)]
    seq: u64,
    #[pyo3(get)]
    time_ns: u64,
    #[pyo3(get)]
    kind: &'static str,
    #[pyo3(get)]
    size: Option<u64>,
    #[pyo3(get)]
    rule: u32,
    #[pyo3(get)]
    reconciled: bool,
    path: Vec<u8>,
    path_to: Option<Vec<u8>>,
}

#[pymethods]
impl Record {
    /// The path, decoded as `os.fsdecode` does.
    #[getter]
    fn path(&self) -> &OsStr {
        OsStr::from_bytes(&self.path)
    }

    /// The path's bytes, exactly.
    #[getter]
    fn path_bytes<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.path)
    }

    /// A rename's new path (as `path`), else None.
    #[getter]
    fn path_to(&self) -> Option<&OsStr> {
        self.path_to.as_deref().map(OsStr::from_bytes)
    }

    fn __repr__(&self) -> String {
        format!(
            "Record(seq={}, kind={:?}, path={:?}{})",
            self.seq,
            self.kind,
            OsStr::from_bytes(&self.path),
            self.path_to
                .as_deref()
                .map(|p| format!(", path_to={:?}", OsStr::from_bytes(p)))
                .unwrap_or_default()
        )
    }
}

/// News about the stream rather than a record. `type` says which:
/// - "gap": seqs `from_seq..=to_seq` were never stored (`reason` says why);
/// - "lagged": this reader fell behind over `from_seq..=to_seq` (without backfill);
/// - "missing": history no longer holds `from_seq..=to_seq`;
/// - "truncated": history starts at `from_seq`;
/// - "storage_gap": history lost `from_seq..=to_seq` (`reason`);
/// - "disconnected": the connection ended (`reason`, `detail`); with reconnect on, a
///   "reconnected" notice follows when the service is back (`from_seq` is its first live seq);
/// - "other_instance": the service now has another history (`detail` names both).
#[pyclass(module = "firehose", frozen, get_all)]
#[derive(Debug)]
pub(crate) struct Notice {
    #[pyo3(name = "type")]
    kind: &'static str,
    from_seq: Option<u64>,
    to_seq: Option<u64>,
    reason: Option<String>,
    detail: Option<String>,
}

#[pymethods]
impl Notice {
    fn __repr__(&self) -> String {
        let mut s = format!("Notice(type={:?}", self.kind);
        if let Some(f) = self.from_seq {
            s += &format!(", from_seq={f}");
        }
        if let Some(t) = self.to_seq {
            s += &format!(", to_seq={t}");
        }
        if let Some(r) = &self.reason {
            s += &format!(", reason={r:?}");
        }
        if let Some(d) = &self.detail {
            s += &format!(", detail={d:?}");
        }
        s + ")"
    }
}

fn notice(
    kind: &'static str,
    from: Option<u64>,
    to: Option<u64>,
    reason: Option<String>,
) -> Notice {
    Notice {
        kind,
        from_seq: from,
        to_seq: to,
        reason,
        detail: None,
    }
}

/// The notice for a non-record event; None for a record.
pub(crate) fn to_notice(ev: &Event<'_>) -> Option<Notice> {
    Some(match *ev {
        Event::Record(_) => return None,
        // The loss vocabulary's own names: gap, storage_gap, lagged, missing, truncated.
        Event::Loss(l) => {
            let (from, to) = match l {
                Loss::Truncated { oldest } => (Some(oldest), None),
                _ => l.seqs().map_or((None, None), |(f, t)| (Some(f), Some(t))),
            };
            notice(l.name(), from, to, l.reason().map(|r| r.name().into()))
        }
        Event::Disconnected { reason, detail } => Notice {
            detail: Some(detail.to_string()),
            ..notice("disconnected", None, None, Some(format!("{reason:?}")))
        },
        Event::Reconnected { start_seq } => notice("reconnected", Some(start_seq), None, None),
        Event::OtherInstance { expected, found } => Notice {
            detail: Some(format!("expected instance {expected}, found {found}")),
            ..notice("other_instance", None, None, None)
        },
        _ => notice("other", None, None, None),
    })
}

/// The Python object for `ev`: a `Record` or a `Notice`.
pub(crate) fn to_object(py: Python<'_>, ev: &Event<'_>) -> PyResult<Py<PyAny>> {
    match ev {
        Event::Record(r) => Ok(Py::new(
            py,
            Record {
                seq: r.seq(),
                time_ns: r.time_ns(),
                kind: r.kind().name(),
                size: r.size(),
                rule: r.rule(),
                reconciled: r.reconciled(),
                path: r.path().to_vec(),
                path_to: r.path_to().map(<[u8]>::to_vec),
            },
        )?
        .into_any()),
        other => Ok(Py::new(py, to_notice(other).expect("not a record"))?.into_any()),
    }
}
