//! The iceoryx2 peer: a crate outside the workspace (`benches/peers/iceoryx2`, so that
//! `cargo test --workspace` never builds iceoryx2), built by [`Peer::build`] and run as two
//! processes per case, pinned and checked like the other rows. See its `src/main.rs` for the
//! roles and the handshake.
//!
//! iceoryx2 keeps its state in `/dev/shm/<prefix>*` and under a root folder; each session
//! gets a prefix and a root of its own, and [`Peer::cleanup`] removes both after each run.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{bail, ensure, Context, Result};

use crate::cases::{Ctx, ReaderMode};
use crate::measure::{Latency, Throughput};
use crate::payload::{Pool, Tally};
use crate::stats::Percentiles;

/// The peer's manifest.
pub const MANIFEST: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/peers/iceoryx2/Cargo.toml");

static RUN: AtomicU64 = AtomicU64::new(0);

/// A `result k=v ...` line, parsed.
type Kv = Vec<(String, u64)>;

/// The built peer.
#[derive(Debug, Clone)]
pub struct Peer {
    exe: PathBuf,
    prefix: String,
    root: PathBuf,
}

/// One running peer process.
struct Proc {
    child: Child,
    out: BufReader<ChildStdout>,
    stdin: Option<ChildStdin>,
    role: &'static str,
}

impl Proc {
    fn line(&mut self) -> Result<String> {
        let mut l = String::new();
        let n = self.out.read_line(&mut l)?;
        if n == 0 {
            let status = self.child.wait()?;
            bail!("iceoryx2 {} ended ({status}) without a result", self.role);
        }
        Ok(l.trim_end().to_string())
    }

    fn expect(&mut self, what: &str) -> Result<()> {
        let l = self.line()?;
        ensure!(l == what, "iceoryx2 {} said {l:?}, not {what:?}", self.role);
        Ok(())
    }

    fn say(&mut self, what: &str) -> Result<()> {
        let s = self.stdin.as_mut().context("stdin")?;
        writeln!(s, "{what}")?;
        s.flush()?;
        Ok(())
    }

    /// The `result k=v ...` line, as numbers.
    fn result(&mut self) -> Result<Kv> {
        let l = self.line()?;
        let rest = l
            .strip_prefix("result ")
            .with_context(|| format!("iceoryx2 {} said {l:?}", self.role))?;
        rest.split_whitespace()
            .map(|kv| {
                let (k, v) = kv.split_once('=').context("k=v")?;
                Ok((k.to_string(), v.parse()?))
            })
            .collect()
    }

    fn finish(mut self) -> Result<()> {
        drop(self.stdin.take());
        let s = self.child.wait()?;
        ensure!(s.success(), "iceoryx2 {} {s}", self.role);
        Ok(())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn get(kv: &[(String, u64)], k: &str) -> Result<u64> {
    kv.iter()
        .find(|(n, _)| n == k)
        .map(|(_, v)| *v)
        .with_context(|| format!("no {k} in the peer's result"))
}

fn percentiles(kv: &[(String, u64)]) -> Result<Percentiles> {
    Ok(Percentiles {
        p50: get(kv, "p50")?,
        p99: get(kv, "p99")?,
        p999: get(kv, "p999")?,
        max: get(kv, "max")?,
        samples: get(kv, "n")?,
    })
}

impl Peer {
    /// Builds the peer (`cargo build --release` of its own manifest). Returns why not if
    /// it cannot be built here.
    ///
    /// # Errors
    /// The reason, for the table: the last lines cargo printed.
    pub fn build() -> std::result::Result<Peer, String> {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let out = Command::new(cargo)
            .args(["build", "--release", "--quiet", "--manifest-path", MANIFEST])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cargo could not be run: {e}"))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let tail: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
            let tail = tail[tail.len().saturating_sub(3)..].join(" / ");
            return Err(format!("cargo build failed: {tail}"));
        }
        let exe = PathBuf::from(MANIFEST)
            .with_file_name("target")
            .join("release")
            .join("firehose-bench-iceoryx2");
        if !exe.exists() {
            return Err(format!("built, but {} is not there", exe.display()));
        }
        let pid = std::process::id();
        Ok(Peer {
            exe,
            prefix: format!("fhb{pid}_"),
            root: std::env::temp_dir().join(format!("fhb-iox2-{pid}")),
        })
    }

    fn spawn(&self, role: &'static str, name: &str, core: usize, args: &[String]) -> Result<Proc> {
        let mut root = self.root.clone().into_os_string();
        root.push("/");
        let mut child = Command::new(&self.exe)
            .arg(role)
            .args(["--name", name, "--core", &core.to_string()])
            .args(["--prefix", &self.prefix])
            .arg("--root")
            .arg(root)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("spawning iceoryx2 {role}"))?;
        let out = BufReader::new(child.stdout.take().context("stdout")?);
        let stdin = child.stdin.take();
        Ok(Proc {
            child,
            out,
            stdin,
            role,
        })
    }

    fn name(&self) -> String {
        format!(
            "fhb-{}-{}",
            std::process::id(),
            RUN.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// Removes what iceoryx2 left: `/dev/shm/<prefix>*` and the root folder.
    pub fn cleanup(&self) {
        if let Ok(d) = std::fs::read_dir("/dev/shm") {
            for e in d.flatten() {
                if e.file_name().to_string_lossy().starts_with(&self.prefix) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }

    /// A subscriber and a publisher; returns the subscriber's and the publisher's results.
    fn pubsub(&self, ctx: &Ctx, args: Vec<String>) -> Result<(Kv, Kv)> {
        let name = self.name();
        let r = (|| {
            let mut sub = self.spawn("sub", &name, ctx.cores.reader, &args)?;
            sub.expect("ready")?;
            let mut publ = self.spawn("pub", &name, ctx.cores.producer, &args)?;
            publ.expect("ready")?;
            // Nothing is timed before the subscriber has received a hello: iceoryx2 drops
            // samples sent before it is connected.
            sub.expect("connected")?;
            publ.say("go")?;
            let p = publ.result()?;
            let s = sub.result()?;
            publ.say("done")?;
            publ.finish()?;
            sub.finish()?;
            Ok((s, p))
        })();
        self.cleanup();
        r
    }

    /// One throughput run: one sample per record, or (`batched`) one slice sample per
    /// 64 KiB batch of frames.
    ///
    /// # Errors
    /// Any failure, and a subscriber whose count or checksum is not what was sent.
    pub fn throughput(&self, payload: usize, batched: bool, ctx: &Ctx) -> Result<Throughput> {
        let mut args = vec![
            "--payload".into(),
            payload.to_string(),
            "--secs".into(),
            ctx.throughput_time.as_secs_f64().to_string(),
        ];
        if batched {
            args.push("--batched".into());
        }
        let (s, p) = self.pubsub(ctx, args)?;
        let pool = Pool::new(payload)?;
        let sent = get(&p, "sent")?;
        let want = Tally::of_stream(&pool, sent);
        let (count, sum) = (get(&s, "count")?, get(&s, "checksum")?);
        ensure!(
            count == want.count && sum == want.checksum,
            "iceoryx2 subscriber got {count} records, checksum {sum:#x}; sent {}, {:#x}",
            want.count,
            want.checksum
        );
        let start = get(&p, "start_ns")?;
        let end = get(&s, "end_ns")?;
        ensure!(
            end > start,
            "the subscriber ended before the publisher started"
        );
        Ok(Throughput {
            payload,
            records: count,
            secs: (end - start) as f64 / 1e9,
            produced: sent,
            producer_secs: (get(&p, "end_ns")? - start) as f64 / 1e9,
            lost: 0,
            producer_cpu_ns: get(&p, "cpu_ns")?,
            reader_cpu_ns: get(&s, "cpu_ns")?,
            producer_sleeps: 0,
            reader_sleeps: 0,
        })
    }

    /// One one-way latency run, one sample per record, stamped at publish.
    ///
    /// # Errors
    /// As [`throughput`](Self::throughput).
    pub fn latency(
        &self,
        payload: usize,
        rate: u32,
        mode: ReaderMode,
        ctx: &Ctx,
    ) -> Result<Latency> {
        let args = vec![
            "--payload".into(),
            payload.to_string(),
            "--secs".into(),
            ctx.latency_time.as_secs_f64().to_string(),
            "--rate".into(),
            rate.to_string(),
            "--mode".into(),
            mode.name().into(),
            "--stamped".into(),
        ];
        let (s, p) = self.pubsub(ctx, args)?;
        let sent = get(&p, "sent")?;
        let count = get(&s, "count")?;
        ensure!(count == sent, "iceoryx2 subscriber got {count} of {sent}");
        let start = get(&p, "start_ns")?;
        Ok(Latency {
            p: percentiles(&s)?,
            records: count,
            secs: (get(&p, "end_ns")? - start) as f64 / 1e9,
        })
    }

    /// One round-trip run: busy-polling (`Spin`) or waiting on an iceoryx2 event (`Sleep`).
    ///
    /// # Errors
    /// Any failure, and answers that are not what was sent.
    pub fn round_trip(&self, payload: usize, mode: ReaderMode, ctx: &Ctx) -> Result<Percentiles> {
        let name = self.name();
        let args = vec![
            "--payload".into(),
            payload.to_string(),
            "--secs".into(),
            ctx.round_trip_time.as_secs_f64().to_string(),
            "--mode".into(),
            mode.name().into(),
        ];
        let r = (|| {
            let mut echo = self.spawn("echo", &name, ctx.cores.reader, &args)?;
            echo.expect("ready")?;
            let mut ping = self.spawn("ping", &name, ctx.cores.producer, &args)?;
            ping.expect("ready")?;
            let p = percentiles(&ping.result()?)?;
            let e = echo.result()?;
            ping.finish()?;
            echo.finish()?;
            ensure!(
                get(&e, "count")? >= p.samples,
                "the echo answered fewer than were timed"
            );
            Ok(p)
        })();
        self.cleanup();
        r
    }
}
