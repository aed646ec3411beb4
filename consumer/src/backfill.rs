//! Filling one page of a hole from history: one seq-range query of at most `page` rows,
//! turned into queued events in seq order, with what is left of the hole queued after
//! them.

use firehose_transport::control::client::{Client, ClientError};
use firehose_transport::control::wire::{HistoryQuery, QueryEnd};
use firehose_transport::record::{FileEvent, Loss};

use crate::follow::{Cause, Pending};
use crate::owned::OwnedEvent;

/// Asks history for `from ..= to` (at most `page` rows) and says what it had. The service
/// waits for a range that is not committed yet, so a page that comes back covers what it
/// covers for good.
///
/// # Errors
/// The client's, when the query cannot be sent or answered.
pub(crate) fn page(
    client: &mut Client<FileEvent>,
    id: u64,
    (from, to): (u64, u64),
    cause: Cause,
    page: u64,
) -> Result<Vec<Pending>, ClientError> {
    let (rows, end) = client.query(HistoryQuery {
        id,
        seq: Some((from, to)),
        limit: page,
        ..HistoryQuery::default()
    })?;
    let mut out = Vec::with_capacity(rows.len() + 2);
    let mut cur = from;
    for row in rows {
        let last = row.gap.map_or(row.seq, |g| g.to.max(row.seq)).min(to);
        if last < cur || row.seq > to {
            continue;
        }
        if row.seq > cur {
            out.push(Pending::Event(OwnedEvent::Loss(Loss::Missing {
                from: cur,
                to: row.seq - 1,
            })));
        }
        out.push(Pending::Event(match OwnedEvent::from_row(row) {
            OwnedEvent::Loss(Loss::Gap { from, reason, .. }) => OwnedEvent::Loss(Loss::Gap {
                from: from.max(cur),
                to: last,
                reason,
            }),
            other => other,
        }));
        cur = last + 1;
    }
    let unfilled = |cur: u64| match cause {
        Cause::RingGap(reason) => OwnedEvent::Loss(Loss::Gap {
            from: cur,
            to,
            reason,
        }),
        Cause::Lag => OwnedEvent::Loss(Loss::Missing { from: cur, to }),
    };
    if cur > to {
        if let QueryEnd::Truncated { oldest } = end {
            out.push(Pending::Event(OwnedEvent::Loss(Loss::Truncated { oldest })));
        }
        return Ok(out);
    }
    match end {
        QueryEnd::Limit => out.push(Pending::Hole {
            from: cur,
            to,
            cause,
        }),
        QueryEnd::Truncated { oldest } => {
            out.push(Pending::Event(OwnedEvent::Loss(Loss::Truncated { oldest })));
            if oldest > cur && oldest > from {
                // Below `oldest` is gone: go on from there.
                out.push(Pending::Advance(oldest.min(to + 1)));
                if oldest <= to {
                    out.push(Pending::Hole {
                        from: oldest,
                        to,
                        cause,
                    });
                }
            } else {
                out.push(Pending::Event(unfilled(cur)));
            }
        }
        QueryEnd::Complete | QueryEnd::Unavailable | QueryEnd::Invalid => {
            out.push(Pending::Event(unfilled(cur)))
        }
    }
    Ok(out)
}
