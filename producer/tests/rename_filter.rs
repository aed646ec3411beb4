//! Renames are filtered on both paths: an atomic save into a filtered set is a create, a
//! rename out of it a remove, a rename within it a rename.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use firehose_producer::filters::RuleSet;
use firehose_producer::history::{HistoryReader, HistoryWriter, WriterConfig};
use firehose_producer::lease::{Lease, LeaseConfig};
use firehose_producer::service::pipeline::{Pipeline, PipelineStats};
use firehose_producer::watch::RawEvent;
use firehose_transport::control::wire::HistoryQuery;
use firehose_transport::publisher::{Publisher, PublisherConfig};
use firehose_transport::record::{EventKind, FileEvent};
use firehose_transport::ring::{Producer, RingConfig};

fn rename(from: &Path, to: &Path) -> RawEvent {
    RawEvent {
        time_ns: 1,
        kind: EventKind::Rename,
        path: from.to_path_buf(),
        path_to: Some(to.to_path_buf()),
        size: None,
        is_dir: false,
        reconciled: false,
    }
}

fn run(
    doc: &str,
    events: impl FnOnce(&Path) -> Vec<RawEvent>,
) -> Vec<(EventKind, String, Option<String>)> {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("w");
    let filters = dir.path().join("filters");
    std::fs::create_dir_all(&filters).unwrap();
    std::fs::write(
        filters.join("a.toml"),
        doc.replace("ROOT", &root.display().to_string()),
    )
    .unwrap();
    let rules = RuleSet::load_dir(&filters, std::slice::from_ref(&root)).unwrap();
    let db = dir.path().join("history.db");
    let writer = Arc::new(HistoryWriter::open(&db, WriterConfig::default()).unwrap());
    let (lease, rec) = Lease::open(
        &dir.path().join("history.lease"),
        1,
        None,
        LeaseConfig::default(),
    )
    .unwrap();
    let producer = Producer::<FileEvent>::new(RingConfig::default()).unwrap();
    let (publisher, _link) = Publisher::start(producer, PublisherConfig::default()).unwrap();
    let mut p = Pipeline::new(
        rules,
        writer.clone(),
        publisher,
        Arc::new(lease),
        None,
        vec![root.clone()],
        rec.next_seq,
        Arc::new(PipelineStats::default()),
    );
    for ev in events(&root) {
        p.on_event(ev);
    }
    writer.flush().unwrap();
    let reader = HistoryReader::open(&db).unwrap();
    let mut c = reader.query(&HistoryQuery::default(), false).unwrap();
    let mut rows = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while c.next_page(&mut rows, 1024).unwrap().is_none() {
        assert!(Instant::now() < deadline, "query never ended");
    }
    let rel = |p: &[u8]| {
        let p = PathBuf::from(String::from_utf8_lossy(p).into_owned());
        p.strip_prefix(&root).unwrap().display().to_string()
    };
    rows.iter()
        .map(|r| (r.kind, rel(&r.path), r.path_to.as_deref().map(rel)))
        .collect()
}

const MD: &str = "[[rule]]\nname = \"notes\"\nroots = [\"ROOT\"]\ninclude = [\"*.md\"]\n";

#[test]
fn an_atomic_save_into_a_filtered_set_is_recorded_as_a_create() {
    let rows = run(MD, |w| {
        vec![rename(&w.join("notes.md.tmp"), &w.join("notes.md"))]
    });
    assert_eq!(rows, vec![(EventKind::Create, "notes.md".into(), None)]);
}

#[test]
fn a_rename_out_of_a_filtered_set_is_a_remove_and_within_it_a_rename() {
    let rows = run(MD, |w| {
        vec![
            rename(&w.join("a.md"), &w.join("a.md.bak")),
            rename(&w.join("b.md"), &w.join("c.md")),
            rename(&w.join("x.txt"), &w.join("y.txt")),
        ]
    });
    assert_eq!(
        rows,
        vec![
            (EventKind::Remove, "a.md".into(), None),
            (EventKind::Rename, "b.md".into(), Some("c.md".into())),
        ]
    );
}

#[test]
fn a_rule_taking_only_creates_still_sees_an_atomic_save() {
    let doc = "[[rule]]\nname = \"new\"\nroots = [\"ROOT\"]\ninclude = [\"*.md\"]\nkinds = [\"create\"]\n";
    let rows = run(doc, |w| vec![rename(&w.join("n.md.tmp"), &w.join("n.md"))]);
    assert_eq!(rows, vec![(EventKind::Create, "n.md".into(), None)]);
}
