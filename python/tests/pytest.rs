//! The Python tests (`tests/py`, pytest) against a real `firehosed`: builds the extension
//! with cargo, puts it beside the package's Python files in the target folder, and runs
//! pytest with that on the path. Skipped (and says so) where pytest or pyarrow is missing;
//! `.ci/run` installs both.

#[path = "../../consumer/tests/real/mod.rs"]
mod real;

use std::path::{Path, PathBuf};
use std::process::Command;

const MANIFEST: &str = env!("CARGO_MANIFEST_DIR");

/// `target/<profile>/python/firehose`, with the extension built and copied in.
fn package() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args(["build", "-q", "-p", "firehose-python", "--lib"])
        .current_dir(Path::new(MANIFEST).join(".."));
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    assert!(cmd.status().unwrap().success(), "building the extension");
    let root = profile_dir.join("python");
    let pkg = root.join("firehose");
    std::fs::create_dir_all(&pkg).unwrap();
    for f in std::fs::read_dir(Path::new(MANIFEST).join("firehose")).unwrap() {
        let f = f.unwrap().path();
        if f.extension().is_some_and(|e| e == "py") {
            std::fs::copy(&f, pkg.join(f.file_name().unwrap())).unwrap();
        }
    }
    std::fs::copy(
        profile_dir.join("libfirehose_native.so"),
        pkg.join("_native.abi3.so"),
    )
    .unwrap();
    root
}

#[test]
fn pytest_against_a_real_service() {
    let probe = Command::new("python3")
        .args(["-c", "import pytest, pyarrow"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        eprintln!(
            "SKIPPED: python3 with pytest and pyarrow is needed (pip install pytest pyarrow)"
        );
        return;
    }
    let root = package();
    let st = Command::new("python3")
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "-x"])
        .arg(Path::new(MANIFEST).join("tests/py"))
        // Not the crate's folder: `python -m` puts the working folder first on the path,
        // and the package's source there has no extension in it.
        .current_dir(&root)
        .env("PYTHONPATH", &root)
        .env("FIREHOSED", real::firehosed())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .status()
        .unwrap();
    assert!(st.success(), "pytest failed (its output is above)");
}
