//! `Batch`: records as an Arrow record batch. It speaks the Arrow PyCapsule interface
//! (`__arrow_c_schema__`, `__arrow_c_array__`, `__arrow_c_stream__`), so
//! `pyarrow.record_batch(b)`, `pyarrow.table(b)` and `polars.DataFrame(b)` take it without
//! copying its buffers.

use std::ffi::{c_void, CStr};
use std::sync::Arc;

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use crate::arrow::{self, ArrowArray, ArrowArrayStream, ArrowSchema, Columns};

/// Records as an Arrow record batch, with what came with them: `next_seq` (where the next
/// page or drain starts), `more` (a query page: history has more past it), `truncated`
/// (history starts at this seq, above the query's start; else None) and `notices` (a
/// drain's news, in the order it came, as `Notice` objects).
///
/// Columns: `seq` uint64, `time` timestamp[ns, UTC], `kind` string, `path` string,
/// `path_to` string (null unless a rename), `size` uint64 (null if unknown), `rule` uint32,
/// `reconciled` bool, `gap_to` uint64 and `gap_reason` string (set on gap rows),
/// `path_bytes` and `path_to_bytes` binary: the exact bytes of a path that is not UTF-8
/// (whose `path` has U+FFFD in their place), else null.
#[pyclass(module = "firehose", frozen)]
#[derive(Debug)]
pub(crate) struct Batch {
    columns: Arc<Columns>,
    #[pyo3(get)]
    next_seq: u64,
    #[pyo3(get)]
    more: bool,
    #[pyo3(get)]
    truncated: Option<u64>,
    #[pyo3(get)]
    notices: Vec<Py<PyAny>>,
}

impl Batch {
    pub(crate) fn new(
        columns: Columns,
        next_seq: u64,
        more: bool,
        truncated: Option<u64>,
        notices: Vec<Py<PyAny>>,
    ) -> Self {
        Batch {
            columns: Arc::new(columns),
            next_seq,
            more,
            truncated,
            notices,
        }
    }
}

/// A C struct handed out in a capsule: its name there and how to release it.
trait Exported: Sized {
    const NAME: &'static CStr;
    /// Releases what `p` owns, unless it was moved out or released (its release is then
    /// NULL).
    ///
    /// # Safety
    /// `p` points to a value of ours, live or moved out.
    unsafe fn release(p: *mut Self);
}

impl Exported for ArrowSchema {
    const NAME: &'static CStr = c"arrow_schema";
    unsafe fn release(p: *mut Self) {
        // SAFETY: a live schema of ours (the caller's contract).
        unsafe { arrow::release_schema_if_live(p) }
    }
}

impl Exported for ArrowArray {
    const NAME: &'static CStr = c"arrow_array";
    unsafe fn release(p: *mut Self) {
        // SAFETY: as above.
        unsafe { arrow::release_array_if_live(p) }
    }
}

impl Exported for ArrowArrayStream {
    const NAME: &'static CStr = c"arrow_array_stream";
    unsafe fn release(p: *mut Self) {
        // SAFETY: as above.
        unsafe { arrow::release_stream_if_live(p) }
    }
}

/// The capsule's destructor: releases the struct unless its consumer moved it out, then
/// frees the struct's own memory.
unsafe extern "C" fn drop_capsule<T: Exported>(capsule: *mut ffi::PyObject) {
    // SAFETY: called by Python with the capsule this destructor was set on. IsValid sets
    // no exception (a pending one, if any, is left as it is).
    if unsafe { ffi::PyCapsule_IsValid(capsule, T::NAME.as_ptr()) } == 0 {
        return;
    }
    // SAFETY: a valid capsule named `T::NAME` (checked above), made by `capsule` below.
    let p = unsafe { ffi::PyCapsule_GetPointer(capsule, T::NAME.as_ptr()) }.cast::<T>();
    // SAFETY: `p` is the `Box::into_raw` of `capsule`; a capsule that was made is freed
    // only here (the other free, in `capsule`, is for one that was not made).
    unsafe { T::release(p) };
    // SAFETY: as above: the box is taken back once.
    drop(unsafe { Box::from_raw(p) });
}

/// `value` in a new capsule named `T::NAME`, which releases and frees it when collected.
fn capsule<T: Exported>(py: Python<'_>, value: T) -> PyResult<Bound<'_, PyAny>> {
    let p = Box::into_raw(Box::new(value));
    // SAFETY: `p` is a valid pointer that the capsule owns from here on; the name is a
    // static C string; the destructor matches the type.
    let cap = unsafe {
        ffi::PyCapsule_New(
            p.cast::<c_void>(),
            T::NAME.as_ptr(),
            Some(drop_capsule::<T>),
        )
    };
    if cap.is_null() {
        // SAFETY: the capsule was not made, so `p` is still ours alone.
        unsafe {
            T::release(p);
        }
        // SAFETY: as above.
        drop(unsafe { Box::from_raw(p) });
        return Err(PyErr::fetch(py));
    }
    // SAFETY: `cap` is a new reference that we own.
    Ok(unsafe { Bound::from_owned_ptr(py, cap) })
}

#[pymethods]
impl Batch {
    fn __len__(&self) -> usize {
        self.columns.len()
    }

    /// Rows.
    #[getter]
    fn num_rows(&self) -> usize {
        self.columns.len()
    }

    /// The schema, as a capsule holding an `ArrowSchema` (the Arrow PyCapsule interface).
    fn __arrow_c_schema__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        capsule(py, arrow::schema())
    }

    /// The batch as a struct array: a pair of capsules (schema, array). A requested schema
    /// is not honoured (the interface allows that): the batch has one schema.
    #[pyo3(signature = (requested_schema=None))]
    fn __arrow_c_array__<'py>(
        &self,
        py: Python<'py>,
        requested_schema: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let _ = requested_schema;
        let schema = capsule(py, arrow::schema())?;
        let array = capsule(py, arrow::array(&self.columns))?;
        PyTuple::new(py, [schema, array])
    }

    /// The batch as a stream of one batch, in a capsule.
    #[pyo3(signature = (requested_schema=None))]
    fn __arrow_c_stream__<'py>(
        &self,
        py: Python<'py>,
        requested_schema: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let _ = requested_schema;
        capsule(py, arrow::stream(&self.columns))
    }

    fn __repr__(&self) -> String {
        format!(
            "Batch({} rows, next_seq={}, more={}, {} notices)",
            self.columns.len(),
            self.next_seq,
            self.more,
            self.notices.len()
        )
    }
}
