//! A GUI that links the consumer must not pull in SQLite, notify or the service, nor the
//! command line's crates (argument parsing, the terminal, JSON, the NATS client): neither
//! the consumer library nor the desktop monitor built on it (`firehose-gui`).

/// The normal dependency tree of `package`, one crate per line.
fn tree(package: &str) -> String {
    let out = std::process::Command::new(env!("CARGO"))
        .args([
            "tree",
            "-p",
            package,
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
        "cargo tree -p {package} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// What no embedding application should get by linking the library: the service's storage
/// and watching, and everything only the `firehose` command uses.
const BANNED: &[&str] = &[
    "rusqlite",
    "libsqlite3-sys",
    "notify",
    "firehose-producer",
    "firehose-cli",
    "clap",
    "ratatui",
    "crossterm",
    "serde_json",
    "anyhow",
    "async-nats",
];

/// Of [`BANNED`], what the desktop monitor's own binary uses for its own arguments and its
/// one-line error: an application may choose these; the library must not bring them.
const THE_GUI_BINARY_USES: &[&str] = &["clap", "anyhow"];

fn assert_clean(package: &str, tree: &str, allowed: &[&str]) {
    for banned in BANNED.iter().filter(|b| !allowed.contains(b)) {
        assert!(
            !tree
                .lines()
                .any(|l| l.split_whitespace().next() == Some(*banned)),
            "{banned} in {package}'s dependency tree:\n{tree}"
        );
    }
}

#[test]
fn the_consumer_depends_on_the_transport_only() {
    let t = tree("firehose-consumer");
    assert!(t.contains("firehose-transport"), "{t}");
    assert_clean("firehose-consumer", &t, &[]);
}

#[test]
fn the_gui_depends_on_the_consumer_not_on_the_service() {
    let t = tree("firehose-gui");
    assert!(t.contains("firehose-consumer"), "{t}");
    assert!(t.contains("eframe"), "{t}");
    assert_clean("firehose-gui", &t, THE_GUI_BINARY_USES);
}
