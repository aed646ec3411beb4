//! A GUI that links the consumer must not pull in SQLite, notify or the service.

#[test]
fn the_consumer_depends_on_the_transport_only() {
    let out = std::process::Command::new(env!("CARGO"))
        .args([
            "tree",
            "-p",
            "firehose-consumer",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--all-features",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("running cargo tree");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = String::from_utf8(out.stdout).unwrap();
    assert!(tree.contains("firehose-transport"), "{tree}");
    for banned in ["rusqlite", "libsqlite3-sys", "notify", "firehose-producer"] {
        assert!(
            !tree
                .lines()
                .any(|l| l.split_whitespace().next() == Some(banned)),
            "{banned} in the consumer's dependency tree:\n{tree}"
        );
    }
}
