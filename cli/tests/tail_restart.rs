//! `firehose tail --json --backfill` across a kill -9 and restart of the real `firehosed`:
//! the seqs it prints are strictly increasing, every record `firehose query` finds in
//! their range was printed, and a printed record that history does not hold lies in the
//! crash gap (it reached the ring, not the database, before the kill).

#[path = "../../consumer/tests/real/mod.rs"]
mod real;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use real::Service;
use serde_json::Value;

/// Records (seq) and gaps (from, to, reason) of NDJSON output.
fn parse(text: &str) -> (Vec<u64>, Vec<(u64, u64, String)>) {
    let mut seqs = Vec::new();
    let mut gaps = Vec::new();
    for line in text.lines() {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        if let Some(s) = v["seq"].as_u64() {
            seqs.push(s);
        } else if let Some(g) = v.get("gap") {
            gaps.push((
                g["from"].as_u64().unwrap(),
                g["to"].as_u64().unwrap(),
                g["reason"].as_str().unwrap().to_string(),
            ));
        }
    }
    (seqs, gaps)
}

fn lines_in(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |t| t.lines().count())
}

#[test]
fn tail_json_backfill_survives_kill_9_and_matches_query() {
    let dir = tempfile::tempdir().unwrap();
    let mut svc = Service::start(dir.path(), &["--synthetic", "3000"]);
    let sock = svc.socket();
    let out_path = dir.path().join("tail.ndjson");
    let count = 15_000;
    let mut tail = Command::new(env!("CARGO_BIN_EXE_firehose"))
        .arg("--socket")
        .arg(&sock)
        .args(["tail", "--json", "--backfill", "--count"])
        .arg(count.to_string())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let until = Instant::now() + real::DEADLINE;
    while lines_in(&out_path) < 3000 {
        assert!(Instant::now() < until, "tail printed too little");
        std::thread::sleep(Duration::from_millis(20));
    }
    svc.kill_9_and_restart(Duration::from_millis(300));
    let until = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(st) = tail.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > until {
            let _ = tail.kill();
            panic!(
                "tail did not reach --count {count} after the restart ({} lines)",
                lines_in(&out_path)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "tail exited with {status}");

    let (printed, tail_gaps) = parse(&std::fs::read_to_string(&out_path).unwrap());
    assert_eq!(printed.len(), count);
    assert!(
        printed.windows(2).all(|w| w[0] < w[1]),
        "seqs strictly increase"
    );
    let (first, last) = (printed[0], printed[printed.len() - 1]);
    let q = Command::new(env!("CARGO_BIN_EXE_firehose"))
        .arg("--socket")
        .arg(&sock)
        .args(["query", "--json", "--since-seq"])
        .arg(first.to_string())
        .arg("--until-seq")
        .arg(last.to_string())
        .output()
        .unwrap();
    assert!(q.status.success(), "{}", String::from_utf8_lossy(&q.stderr));
    let (stored, stored_gaps) = parse(&String::from_utf8(q.stdout).unwrap());
    let printed_set: BTreeSet<u64> = printed.iter().copied().collect();
    let missing: Vec<u64> = stored
        .iter()
        .copied()
        .filter(|s| !printed_set.contains(s))
        .collect();
    assert!(
        missing.is_empty(),
        "stored records tail never printed: {} (first {:?})",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    // The kill leaves a crash gap, in history and in what tail said.
    let crash: Vec<(u64, u64)> = stored_gaps
        .iter()
        .filter(|g| g.2 == "crash")
        .map(|g| (g.0, g.1))
        .collect();
    assert!(
        !crash.is_empty(),
        "no crash gap in history: {stored_gaps:?}"
    );
    // When tail printed records from the ring that died with the service before their
    // commit, it resumes inside the crash gap and names the rest of it: the same end, a
    // start inside the gap.
    assert!(
        tail_gaps.iter().any(|g| g.2 == "crash"
            && crash
                .iter()
                .any(|&(a, b)| g.1 == b && (a..=b).contains(&g.0))),
        "tail did not report the crash gap {crash:?}: {tail_gaps:?}"
    );
    // What tail printed but history lacks reached the ring and died with the service
    // before its commit: it lies in the crash gap.
    let stored_set: BTreeSet<u64> = stored.iter().copied().collect();
    for s in printed.iter().filter(|s| !stored_set.contains(s)) {
        assert!(
            crash.iter().any(|&(a, b)| (a..=b).contains(s)),
            "seq {s} was printed, is not stored, and is in no crash gap {crash:?}"
        );
    }
    eprintln!(
        "printed {} seqs {first}..={last}; history holds {} of them; crash gap {crash:?}; \
         {} printed from the ring only",
        printed.len(),
        stored.len(),
        printed.iter().filter(|s| !stored_set.contains(s)).count()
    );
    // Both sides of the restart were printed.
    assert!(
        printed.iter().any(|&s| s > crash[0].1),
        "nothing after the restart"
    );
}
