//! `Reader.status()`: the service's status as a dict (the same fields as
//! `firehose status --json`).

use firehose_consumer::{Policy, Status};
use pyo3::prelude::*;
use pyo3::types::PyDict;

pub(crate) fn to_dict<'py>(py: Python<'py>, st: &Status) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("pid", st.pid)?;
    d.set_item("uptime_ms", st.uptime_ms)?;
    d.set_item("backend", &st.backend)?;
    d.set_item("roots", &st.roots)?;
    d.set_item("roots_gone", &st.roots_gone)?;
    d.set_item("rules", st.rules)?;
    d.set_item("rate_per_s", st.rate_per_s)?;
    d.set_item("rate_per_min", st.rate_per_min)?;
    d.set_item("ring_capacity", st.ring_capacity)?;
    d.set_item("ring_fill", st.ring_fill)?;
    d.set_item("epoch", st.epoch)?;
    d.set_item("next_seq", st.next_seq)?;
    d.set_item("history_rows", st.history_rows)?;
    d.set_item("history_bytes", st.history_bytes)?;
    d.set_item("history_rows_per_s", st.history_rows_per_s)?;
    d.set_item("health", &st.health)?;
    d.set_item("storage", &st.storage)?;
    d.set_item("unwatched", &st.unwatched)?;
    d.set_item("unwatched_count", st.unwatched_count)?;
    d.set_item("readers_total", st.readers_total)?;
    let readers = st
        .readers
        .iter()
        .map(|r| {
            let rd = PyDict::new(py);
            rd.set_item("id", r.id)?;
            rd.set_item("pid", r.pid)?;
            rd.set_item("uid", r.uid)?;
            rd.set_item("name", &r.name)?;
            rd.set_item(
                "policy",
                match r.policy {
                    Policy::Lossless => "lossless",
                    Policy::Lagging => "lagging",
                },
            )?;
            rd.set_item("lag_bytes", r.lag_bytes)?;
            Ok(rd)
        })
        .collect::<PyResult<Vec<_>>>()?;
    d.set_item("readers", readers)?;
    let c = &st.counters;
    let counters = PyDict::new(py);
    counters.set_item("records", c.records)?;
    counters.set_item("overflows", c.overflows)?;
    counters.set_item("not_stored", c.not_stored)?;
    counters.set_item("not_streamed", c.not_streamed)?;
    counters.set_item("writer_overflowed", c.writer_overflowed)?;
    counters.set_item("retention_removed", c.retention_removed)?;
    counters.set_item("lease_blocked", c.lease_blocked)?;
    counters.set_item("cut_off", c.cut_off)?;
    counters.set_item("left_behind", c.left_behind)?;
    d.set_item("counters", counters)?;
    Ok(d)
}
