//! `firehose._native`, the extension module under the Python package `firehose`: a reader
//! of the service's live records (an iterator, a non-blocking drain, one fd for an asyncio
//! loop), its status, and history pages as Arrow record batches (the Arrow PyCapsule
//! interface, so pyarrow and polars take them without a copy).
//!
//! Built on `firehose_consumer::PollFollower`, as the C API is.

mod arrow;
mod batch;
mod error;
mod event;
mod reader;
mod status;

use pyo3::prelude::*;

/// The module.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<reader::Reader>()?;
    m.add_class::<event::Record>()?;
    m.add_class::<event::Notice>()?;
    m.add_class::<batch::Batch>()?;
    m.add("Error", py.get_type::<error::Error>())?;
    m.add("NotRunning", py.get_type::<error::NotRunning>())?;
    m.add("NotAllowed", py.get_type::<error::NotAllowed>())?;
    m.add("Disconnected", py.get_type::<error::Disconnected>())?;
    m.add("OtherInstance", py.get_type::<error::OtherInstance>())?;
    m.add("InvalidQuery", py.get_type::<error::InvalidQuery>())?;
    m.add("NoHistory", py.get_type::<error::NoHistory>())?;
    Ok(())
}
