//! The filter engine's throughput: events/s through a 100-rule set on one core.
//!
//! Target (issue 8): at least 2 million events/s. The set has 100 rules in 10 documents,
//! over 40 project roots plus rules on the `--watch` root, with file-name globs
//! (`*.rs`), globs relative to roots (`src/**/*.rs`), anywhere globs (`**/target/**`),
//! absolute globs and kind lists. The paths are a fixed-seed mix of source files, build
//! output, VCS internals, downloads and paths outside every root, with mixed kinds.
//!
//! Run: `cargo bench -p firehose-producer --bench filters`

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use firehose_producer::filters::{MatchScratch, RuleSet};
use firehose_transport::record::EventKind;
use std::fmt::Write as _;
use std::path::PathBuf;

const HOME: &str = "/home/user";
const PROJECTS: usize = 40;
const RULES_PER_DOC: usize = 10;
const DOCS: usize = 10;

/// A deterministic generator (xorshift64*), so every run sees the same paths.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Rule `i` of 100: a mix of the shapes documents use.
fn rule(i: usize, out: &mut String) {
    let p = i % PROJECTS;
    let root = format!("{HOME}/proj{p}");
    let _ = writeln!(out, "[[rule]]\nname = \"rule-{i}\"");
    if i == 99 {
        // Deletions anywhere under the --watch root (no roots of its own).
        let _ = writeln!(out, "kinds = [\"remove\"]");
        return;
    }
    match i % 10 {
        0 => {
            let _ = writeln!(out, "roots = [\"{root}\"]\ninclude = [\"*.rs\", \"Cargo.toml\"]\nexclude = [\"**/target/**\"]\ncoalesce_ms = 100");
        }
        1 => {
            let _ = writeln!(out, "roots = [\"{root}\"]\ninclude = [\"src/**/*.rs\", \"tests/**\"]\nkinds = [\"create\", \"modify\", \"close_write\"]");
        }
        2 => {
            let _ = writeln!(
                out,
                "roots = [\"{root}\"]\ninclude = [\"docs/**/*.md\", \"*.txt\"]\nstore = false"
            );
        }
        3 => {
            let _ = writeln!(out, "roots = [\"{root}\"]\nexclude = [\"**/.git/**\", \"*.tmp\", \"*~\", \"**/node_modules/**\"]\nkinds = [\"remove\", \"rename\"]");
        }
        4 => {
            let _ = writeln!(out, "roots = [\"{root}\", \"{HOME}/shared{p}\"]\ninclude = [\"*.{{c,h,cpp,hpp}}\", \"Makefile\", \"CMakeLists.txt\"]");
        }
        5 => {
            let _ = writeln!(out, "include = [\"{root}/data/**/*.csv\", \"{root}/data/**/*.parquet\"]\nstream = false");
        }
        6 => {
            let _ = writeln!(out, "roots = [\"{root}\"]\ninclude = [\"*.py\", \"*.pyi\"]\nexclude = [\"**/__pycache__/**\", \"**/.venv/**\"]");
        }
        7 => {
            let _ = writeln!(out, "roots = [\"{root}/assets\"]\ninclude = [\"**/*.png\", \"**/*.svg\"]\nkinds = [\"create\", \"remove\"]");
        }
        8 => {
            let _ = writeln!(out, "roots = [\"{root}\"]\ninclude = [\"*.json\", \"*.yaml\", \"*.yml\", \"*.toml\"]\nexclude = [\"**/target/**\", \"package-lock.json\"]");
        }
        _ => {
            let _ = writeln!(out, "roots = [\"{root}\"]\nkinds = [\"metadata\"]");
        }
    }
}

fn rule_set() -> (tempfile::TempDir, RuleSet) {
    let dir = tempfile::tempdir().expect("tempdir");
    for d in 0..DOCS {
        let mut text = String::new();
        for r in 0..RULES_PER_DOC {
            rule(d * RULES_PER_DOC + r, &mut text);
        }
        std::fs::write(dir.path().join(format!("{d:02}.toml")), text).expect("write");
    }
    let set = RuleSet::load_dir(dir.path(), &[PathBuf::from(HOME)]).expect("valid documents");
    assert_eq!(set.rules().len(), 100);
    (dir, set)
}

fn paths(n: usize) -> Vec<(Vec<u8>, EventKind)> {
    use EventKind::*;
    let kinds = [
        Create, Modify, Modify, Modify, CloseWrite, CloseWrite, Metadata, Remove, Rename,
    ];
    let exts = [
        "rs", "toml", "md", "txt", "c", "h", "py", "json", "png", "o", "rlib", "d", "tmp", "lock",
        "csv",
    ];
    let dirs = [
        "src",
        "src/net",
        "src/ui/widgets",
        "tests",
        "docs/guide",
        "target/debug/deps",
        "target/release/build/x-1f2e/out",
        ".git/objects/ab",
        "node_modules/left-pad/lib",
        "assets/icons",
        "data/2026/03",
        "scripts",
        "__pycache__",
    ];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    (0..n)
        .map(|_| {
            let kind = kinds[rng.below(kinds.len())];
            let path = match rng.below(20) {
                // Outside every root.
                0 => format!(
                    "/tmp/build-{}/obj/file{}.o",
                    rng.below(100),
                    rng.below(1000)
                ),
                1 => format!("/var/log/app/{}.log", rng.below(50)),
                // Under the --watch root but no project.
                2 => format!("{HOME}/Downloads/file {}.pdf", rng.below(500)),
                3 => format!(
                    "{HOME}/.cache/mozilla/firefox/cache2/entries/{:016X}",
                    rng.next()
                ),
                // Projects, including ones no rule names.
                _ => format!(
                    "{HOME}/proj{}/{}/file_{}.{}",
                    rng.below(PROJECTS + 10),
                    dirs[rng.below(dirs.len())],
                    rng.below(10_000),
                    exts[rng.below(exts.len())]
                ),
            };
            (path.into_bytes(), kind)
        })
        .collect()
}

fn filters(c: &mut Criterion) {
    let (_dir, set) = rule_set();
    let events = paths(16_384);
    let matched = events
        .iter()
        .filter(|(p, k)| set.matches(p, *k).is_some())
        .count();
    eprintln!(
        "100 rules, {} include + {} exclude globs; {matched} of {} events match",
        set.glob_counts().0,
        set.glob_counts().1,
        events.len()
    );
    let mut g = c.benchmark_group("filters");
    g.throughput(Throughput::Elements(events.len() as u64));
    g.bench_function("matches_with/100_rules", |b| {
        let mut scratch = MatchScratch::default();
        b.iter(|| {
            let mut n = 0u32;
            for (p, k) in &events {
                if let Some(m) = set.matches_with(black_box(p), *k, &mut scratch) {
                    n = n.wrapping_add(m.rule);
                }
            }
            n
        })
    });
    g.bench_function("matches/100_rules", |b| {
        b.iter(|| {
            let mut n = 0u32;
            for (p, k) in &events {
                if let Some(m) = set.matches(black_box(p), *k) {
                    n = n.wrapping_add(m.rule);
                }
            }
            n
        })
    });
    // Only paths inside project roots: every event reaches the glob sets.
    let projects: Vec<_> = events
        .iter()
        .filter(|(p, _)| p.starts_with(format!("{HOME}/proj").as_bytes()))
        .cloned()
        .collect();
    g.throughput(Throughput::Elements(projects.len() as u64));
    g.bench_function("matches_with/100_rules/project_paths", |b| {
        let mut scratch = MatchScratch::default();
        b.iter(|| {
            let mut n = 0u32;
            for (p, k) in &projects {
                if let Some(m) = set.matches_with(black_box(p), *k, &mut scratch) {
                    n = n.wrapping_add(m.rule);
                }
            }
            n
        })
    });
    g.finish();
}

criterion_group!(benches, filters);
criterion_main!(benches);
