//! The coalescer, driven by a table of cases: inputs at times, expected outputs at times.

use crate::filters::Coalescer;
use firehose_transport::record::{EventKind, FileEvent};
use std::time::{Duration, Instant};

/// One input: at `ms`, push (`kind`, `path`, `size`, window) or flush (`kind` = None).
#[derive(Clone, Copy)]
struct In {
    ms: u64,
    op: Op,
}

#[derive(Clone, Copy)]
enum Op {
    /// kind, path, size, coalescing window in ms (0: none)
    Push(EventKind, &'static str, Option<u64>, u64),
    /// A rename from the first path to the second (never folded), window 0.
    Rename(&'static str, &'static str),
    Flush,
}

/// One expected output: released at `ms`, with kind, path and size.
type Out = (u64, EventKind, &'static str, Option<u64>);

struct Case {
    name: &'static str,
    cap: usize,
    inputs: &'static [In],
    outputs: &'static [Out],
}

const fn push(ms: u64, kind: EventKind, path: &'static str, size: Option<u64>, window: u64) -> In {
    In {
        ms,
        op: Op::Push(kind, path, size, window),
    }
}
const fn flush(ms: u64) -> In {
    In { ms, op: Op::Flush }
}
const fn rename(ms: u64, from: &'static str, to: &'static str) -> In {
    In {
        ms,
        op: Op::Rename(from, to),
    }
}

use EventKind::{CloseWrite as Close, Create, Metadata, Modify, Remove, Rename};

const CASES: &[Case] = &[
    Case {
        name: "create, modifies and close fold into one create with the last size",
        cap: 8,
        inputs: &[
            push(0, Create, "/a", Some(0), 100),
            push(10, Modify, "/a", Some(5), 100),
            push(20, Modify, "/a", None, 100),
            push(30, Close, "/a", Some(9), 100),
            flush(99),
            flush(100),
        ],
        outputs: &[(100, Create, "/a", Some(9))],
    },
    Case {
        name: "without a create the last kind wins",
        cap: 8,
        inputs: &[
            push(0, Modify, "/a", Some(1), 50),
            push(10, Close, "/a", Some(2), 50),
            push(20, Modify, "/a", Some(3), 50),
            flush(60),
        ],
        outputs: &[(60, Modify, "/a", Some(3))],
    },
    Case {
        name: "the window is counted from the first event and is half-open",
        cap: 8,
        inputs: &[
            push(0, Modify, "/a", Some(1), 100),
            push(99, Modify, "/a", Some(2), 100),
            push(100, Modify, "/a", Some(3), 100),
            flush(150),
            flush(200),
        ],
        outputs: &[(100, Modify, "/a", Some(2)), (200, Modify, "/a", Some(3))],
    },
    Case {
        name: "paths are folded separately and leave in deadline order",
        cap: 8,
        inputs: &[
            push(0, Create, "/a", None, 100),
            push(5, Create, "/b", None, 20),
            push(6, Modify, "/a", Some(4), 100),
            push(7, Modify, "/b", Some(8), 20),
            flush(1000),
        ],
        outputs: &[(1000, Create, "/b", Some(8)), (1000, Create, "/a", Some(4))],
    },
    Case {
        name: "a remove releases the pending burst first, then passes",
        cap: 8,
        inputs: &[
            push(0, Create, "/a", Some(1), 100),
            push(10, Remove, "/a", None, 100),
            flush(200),
        ],
        outputs: &[(10, Create, "/a", Some(1)), (10, Remove, "/a", None)],
    },
    Case {
        name: "metadata passes through; other paths stay pending",
        cap: 8,
        inputs: &[
            push(0, Create, "/a", None, 100),
            push(1, Metadata, "/b", None, 100),
            push(2, Metadata, "/a", None, 100),
            flush(100),
        ],
        outputs: &[
            (1, Metadata, "/b", None),
            (2, Create, "/a", None),
            (2, Metadata, "/a", None),
        ],
    },
    Case {
        name: "a rename releases bursts on both of its paths",
        cap: 8,
        inputs: &[
            push(0, Create, "/tmp1", Some(1), 100),
            push(1, Modify, "/dst", Some(2), 100),
            push(2, Create, "/other", None, 100),
            rename(3, "/tmp1", "/dst"),
            flush(101),
            flush(102),
        ],
        outputs: &[
            (3, Create, "/tmp1", Some(1)),
            (3, Modify, "/dst", Some(2)),
            (3, Rename, "/tmp1", None),
            (102, Create, "/other", None),
        ],
    },
    Case {
        name: "no window: nothing is held",
        cap: 8,
        inputs: &[
            push(0, Create, "/a", None, 0),
            push(1, Modify, "/a", Some(3), 0),
        ],
        outputs: &[(0, Create, "/a", None), (1, Modify, "/a", Some(3))],
    },
    Case {
        name: "an event without a window releases a pending burst on its path",
        cap: 8,
        inputs: &[
            push(0, Create, "/a", None, 100),
            push(1, Modify, "/a", Some(3), 0),
        ],
        outputs: &[(1, Create, "/a", None), (1, Modify, "/a", Some(3))],
    },
    Case {
        name: "at the cap the earliest deadline leaves early",
        cap: 2,
        inputs: &[
            push(0, Create, "/a", None, 100),
            push(1, Create, "/b", None, 10),
            push(2, Create, "/c", None, 100),
            push(3, Modify, "/a", Some(7), 100),
            push(4, Create, "/d", None, 100),
            flush(500),
        ],
        outputs: &[
            (2, Create, "/b", None),
            (4, Create, "/a", Some(7)),
            (500, Create, "/c", None),
            (500, Create, "/d", None),
        ],
    },
    Case {
        name: "a push releases what is already due before it",
        cap: 8,
        inputs: &[
            push(0, Create, "/a", None, 10),
            push(50, Create, "/b", None, 10),
            flush(60),
        ],
        outputs: &[(50, Create, "/a", None), (60, Create, "/b", None)],
    },
];

fn event(kind: EventKind, path: &str, path_to: Option<&str>, size: Option<u64>) -> FileEvent {
    FileEvent {
        seq: 0,
        time_ns: 0,
        kind,
        path: path.as_bytes().to_vec(),
        path_to: path_to.map(|p| p.as_bytes().to_vec()),
        rule: 2,
        size,
        reconciled: false,
        blind: None,
        gap: None,
    }
}

fn run(case: &Case) -> Vec<(u64, EventKind, String, Option<u64>)> {
    let t0 = Instant::now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    let mut c = Coalescer::new(case.cap);
    let mut got = Vec::new();
    let mut out = Vec::new();
    for input in case.inputs {
        match input.op {
            Op::Push(kind, path, size, window) => {
                let w = (window > 0).then(|| Duration::from_millis(window));
                c.push(event(kind, path, None, size), w, at(input.ms), &mut out);
            }
            Op::Rename(from, to) => {
                c.push(
                    event(Rename, from, Some(to), None),
                    None,
                    at(input.ms),
                    &mut out,
                );
            }
            Op::Flush => out.extend(c.flush_due(at(input.ms))),
        }
        assert!(c.len() <= case.cap, "{}: over the cap", case.name);
        for e in out.drain(..) {
            got.push((
                input.ms,
                e.kind,
                String::from_utf8_lossy(&e.path).into_owned(),
                e.size,
            ));
        }
    }
    got
}

#[test]
fn coalescer_cases() {
    for case in CASES {
        let want: Vec<_> = case
            .outputs
            .iter()
            .map(|&(ms, k, p, s)| (ms, k, p.to_string(), s))
            .collect();
        assert_eq!(run(case), want, "case: {}", case.name);
    }
}

#[test]
fn deadlines_and_flush_all() {
    let t0 = Instant::now();
    let mut c: Coalescer<FileEvent> = Coalescer::new(4);
    assert_eq!(c.next_deadline(), None);
    let mut out = Vec::new();
    c.push(
        event(Create, "/a", None, None),
        Some(Duration::from_millis(30)),
        t0,
        &mut out,
    );
    c.push(
        event(Create, "/b", None, None),
        Some(Duration::from_millis(10)),
        t0,
        &mut out,
    );
    assert!(out.is_empty());
    assert_eq!(c.next_deadline(), Some(t0 + Duration::from_millis(10)));
    assert!(c.flush_due(t0 + Duration::from_millis(9)).is_empty());
    let all = c.flush_all();
    assert_eq!(
        all.iter().map(|e| e.path.as_slice()).collect::<Vec<_>>(),
        [b"/b", b"/a"]
    );
    assert!(c.is_empty());
    assert_eq!(c.next_deadline(), None);
}
