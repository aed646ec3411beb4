//! The monitor in a real window under Xvfb (Mesa's software GL): with the real `firehosed`
//! streaming 1 M synthetic records/s (streamed, not stored) for 30 s while files are made
//! in its watched folder, the window shows rows (a screenshot of it is not blank and has
//! the table's text in it), keeps drawing frames, and stays under a memory bound. Frame
//! rate, lag and CPU are reported here and measured against their targets by
//! `scripts/gui-window`; this test only fails when the window stalls, crashes, renders
//! nothing or grows past the bound. Skips, saying why, without Xvfb, xwd or xwdtopnm.

#[path = "../../consumer/tests/real/mod.rs"]
mod real;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SECS: u64 = 30;
/// Peak resident memory allowed: the window holds at most 100,000 rows.
const MAX_RSS_MIB: u64 = 512;

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An X display nobody uses.
fn free_display() -> u32 {
    (90..200)
        .find(|n| !Path::new(&format!("/tmp/.X11-unix/X{n}")).exists())
        .expect("a free X display")
}

/// A screenshot of the whole screen as (width, height, RGB bytes).
fn screenshot(display: &str, png: &Path) -> (usize, usize, Vec<u8>) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "xwd -root -silent -display {display} | xwdtopnm 2>/dev/null | tee {ppm} | pnmtopng > {png}",
            ppm = png.with_extension("ppm").display(),
            png = png.display()
        ))
        .status()
        .expect("run xwd");
    assert!(out.success(), "xwd | xwdtopnm failed");
    let ppm = std::fs::read(png.with_extension("ppm")).expect("read the screenshot");
    // P6 <w> <h> <max>\n<rgb...>
    let mut fields = Vec::new();
    let mut at = 0;
    while fields.len() < 4 {
        while ppm[at].is_ascii_whitespace() {
            at += 1;
        }
        let start = at;
        while !ppm[at].is_ascii_whitespace() {
            at += 1;
        }
        fields.push(String::from_utf8_lossy(&ppm[start..at]).into_owned());
    }
    assert_eq!(fields[0], "P6", "a binary PPM");
    let (w, h): (usize, usize) = (fields[1].parse().unwrap(), fields[2].parse().unwrap());
    let rgb = ppm[at + 1..].to_vec();
    assert_eq!(rgb.len(), w * h * 3, "the screenshot's size");
    (w, h, rgb)
}

#[test]
fn a_real_window_shows_rows_at_a_million_records_a_second() {
    for tool in ["Xvfb", "xwd", "xwdtopnm", "pnmtopng"] {
        if !have(tool) {
            eprintln!("SKIPPED: no {tool} (Debian: xvfb, x11-apps, netpbm)");
            return;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path().canonicalize().unwrap();
    std::fs::create_dir_all(dir.join("filters")).unwrap();
    // Everything is streamed; the synthetic load is not stored (its rule says so), the
    // files are.
    std::fs::write(
        dir.join("filters/load.toml"),
        "[[rule]]\nname = \"synthetic\"\ninclude = [\"**/synthetic/**\"]\nstore = false\n\n\
         [[rule]]\nname = \"files\"\nexclude = [\"**/synthetic/**\"]\n",
    )
    .unwrap();
    let svc = real::Service::start(&dir, &["--synthetic", "1000000"]);

    let n = free_display();
    let display = format!(":{n}");
    let _xvfb = Killed(
        Command::new("Xvfb")
            .args([&display, "-screen", "0", "1280x800x24", "-nolisten", "tcp"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start Xvfb"),
    );
    let until = Instant::now() + real::DEADLINE;
    while !Path::new(&format!("/tmp/.X11-unix/X{n}")).exists() {
        assert!(Instant::now() < until, "Xvfb did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let gui = Command::new(env!("CARGO_BIN_EXE_firehose-gui"))
        .arg("--socket")
        .arg(svc.socket())
        .args(["--stats-after", &SECS.to_string()])
        .env("DISPLAY", &display)
        .env_remove("WAYLAND_DISPLAY")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start firehose-gui");
    let mut gui = Killed(gui);

    // Files made while the load streams; then a screenshot of the window.
    std::thread::sleep(Duration::from_secs(3));
    for i in 0..50 {
        std::fs::write(dir.join("w").join(format!("made{i}.txt")), b"x").unwrap();
    }
    // Not blank: the table area (left two thirds, below the bar) has text in it: many
    // pixels far brighter than the dark background, in many rows of pixels. Screenshots
    // until it does: a cold start (the debug binary and Mesa's shaders loading for the
    // first time) can take the first frames past a fixed wait.
    let png = std::env::temp_dir().join(format!("firehose-gui-{}.png", std::process::id()));
    let shot_until = Instant::now() + real::DEADLINE;
    loop {
        std::thread::sleep(Duration::from_secs(2));
        let (w, h, rgb) = screenshot(&display, &png);
        let lit_rows = (120..h - 10)
            .filter(|&y| {
                (10..w * 2 / 3).any(|x| {
                    let p = &rgb[(y * w + x) * 3..(y * w + x) * 3 + 3];
                    p.iter().map(|&c| u32::from(c)).sum::<u32>() > 400
                })
            })
            .count();
        if lit_rows > (h - 130) / 3 {
            eprintln!("screenshot: {}", png.display());
            break;
        }
        assert!(
            Instant::now() < shot_until,
            "the table area is nearly blank ({lit_rows} lit pixel rows): {}",
            png.display()
        );
    }

    // The window keeps drawing and stays within its memory bound.
    let deadline = Instant::now() + Duration::from_secs(SECS + 30);
    let status = loop {
        if let Some(st) = gui.0.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "firehose-gui did not finish");
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(gui.0.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(status.success(), "firehose-gui failed: {status}\n{err}");
    eprintln!("{}", err.trim());
    let stat = |key: &str| -> f64 {
        let at = err
            .find(key)
            .unwrap_or_else(|| panic!("no {key:?} in {err:?}"));
        let num: String = err[..at]
            .trim_end()
            .rsplit(|c: char| !(c.is_ascii_digit() || c == '.'))
            .next()
            .unwrap_or("")
            .to_string();
        num.parse().unwrap_or_else(|_| panic!("{key:?} in {err:?}"))
    };
    let frames = stat("frames in");
    let records = stat("records (");
    let rss = err
        .rsplit("peak RSS ")
        .next()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .expect("peak RSS");
    assert!(frames >= 10.0 * SECS as f64, "the window stalled: {err}");
    assert!(
        records > 1_000_000.0,
        "the window did not take the stream: {err}"
    );
    assert!(
        rss < MAX_RSS_MIB,
        "peak RSS {rss} MiB over {MAX_RSS_MIB} MiB"
    );
    let _ = std::fs::remove_file(png.with_extension("ppm"));
    drop(svc);
    let _: PathBuf = png;
}
