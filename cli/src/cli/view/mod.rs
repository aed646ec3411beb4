//! `firehose view`: a live terminal viewer. A reader thread drains the ring as records come
//! into a bounded inbox (`Follower::into_background`); the screen takes the inbox once per
//! frame into its bounded buffer, redraws at most every [`FRAME`] (and only when something
//! changed), and sends history page requests to the reader thread, which asks on the same
//! connection without waiting for the answer (one socket, one ring reader).
//!
//! Nothing polls: the loop sleeps until a key (read by a thread of its own), new records or
//! a history answer (the reader thread's callback) wake it, or a timer that is due: the next
//! frame after a wake, the sparkline's next second while it shows anything. At rest the
//! viewer does not wake at all.

mod app;
mod input;
mod term;
mod ui;

use std::time::{Duration, Instant};

use firehose_consumer::{Options, Policy, Start};

use super::{code, Cli};
use app::App;
use input::Flow;

/// The shortest time between two frames.
const FRAME: Duration = Duration::from_millis(33);

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Read losslessly (the service holds back for this reader, within its budget).
    #[arg(long)]
    lossless: bool,
    /// Start at this seq (older records come from history), instead of the newest.
    #[arg(long, value_name = "N")]
    from_seq: Option<u64>,
    /// Most rows held in memory; scrolling above them pages in history.
    #[arg(long, value_name = "ROWS", default_value_t = 100_000)]
    buffer: usize,
    /// On exit, print to stderr the frames drawn, the records received and the CPU time used
    /// (to check that the viewer keeps up).
    #[arg(long)]
    stats: bool,
}

pub(crate) fn run(cli: &Cli, a: &Args) -> anyhow::Result<i32> {
    let socket = cli.socket()?;
    let f = Options::new()
        .socket(socket)
        .name("firehose view")
        .policy(if a.lossless {
            Policy::Lossless
        } else {
            Policy::Lagging
        })
        .start(a.from_seq.map_or(Start::Newest, Start::Seq))
        .backfill(a.from_seq.is_some())
        .reconnect(true)
        .connect()?;
    // Every source of work sends a token; the loop sleeps on them.
    let (wake_tx, wake_rx) = crossbeam_channel::bounded::<()>(1);
    let waker = move || {
        // Full: a wake is already pending, which is all this says.
        let _pending = wake_tx.try_send(());
    };
    let mut app = App::new(a.buffer);
    app.m.live_next = f.next_seq();
    let live = f.into_background(a.buffer, waker)?;
    let (mut term, _guard) = term::setup()?;
    let keys = term::spawn_key_reader()?;
    let started = Instant::now();
    let mut next_frame = Instant::now();
    // The first frame is drawn at once.
    let mut frame_due: Option<Instant> = Some(Instant::now());
    let mut frames = 0u64;
    loop {
        let sparkline_tick = (!app.m.rate.is_quiet())
            .then(|| started + Duration::from_secs(started.elapsed().as_secs() + 1));
        let due = [frame_due, sparkline_tick].into_iter().flatten().min();
        let timer = match due {
            Some(d) => crossbeam_channel::at(d),
            None => crossbeam_channel::never(),
        };
        crossbeam_channel::select! {
            recv(keys) -> k => match k {
                Ok(Ok(ev)) => {
                    if input::handle(&mut app, &ev) == Flow::Quit {
                        drop(_guard);
                        if a.stats {
                            print_stats(frames, &app, started.elapsed());
                        }
                        return Ok(code::OK);
                    }
                    frame_due.get_or_insert(next_frame);
                }
                Ok(Err(e)) => return Err(e.into()),
                Err(_) => anyhow::bail!("the terminal's key reader stopped"),
            },
            recv(wake_rx) -> _ => {
                frame_due.get_or_insert(next_frame);
            }
            recv(timer) -> _ => {
                frame_due.get_or_insert(next_frame);
            }
        }
        if frame_due.is_none_or(|d| Instant::now() < d) {
            continue;
        }
        frame_due = None;
        next_frame = Instant::now() + FRAME;
        // Once per frame: everything the reader thread gathered (never waits for it).
        app.m.live_next = live.next_seq();
        let sec = started.elapsed().as_secs();
        if app.m.ingest(live.take(), sec) {
            app.dirty = true;
        }
        while let Some(a) = live.try_answer() {
            app.history_answer(a);
        }
        if let Some(r) = app.history_request() {
            live.ask(r);
            app.dirty = true;
        }
        if app.dirty {
            app.dirty = false;
            term.draw(|fr| ui::draw(fr, &mut app))?;
            frames += 1;
        }
    }
}

/// The `--stats` line: frames, records and CPU over the viewer's life.
fn print_stats(frames: u64, app: &App, up: Duration) {
    let secs = up.as_secs_f64().max(1e-9);
    let cpu = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF)
        .map(|u| {
            let t = |v: nix::sys::time::TimeVal| v.tv_sec() as f64 + v.tv_usec() as f64 / 1e6;
            t(u.user_time()) + t(u.system_time())
        })
        .unwrap_or(0.0);
    eprintln!(
        "firehose view: {frames} frames in {secs:.1} s ({:.1}/s), {} records ({:.0}/s), lagged {}, CPU {cpu:.1} s ({:.0}% of one core)",
        frames as f64 / secs,
        app.m.counts.received,
        app.m.counts.received as f64 / secs,
        app.m.counts.lagged,
        cpu * 100.0 / secs
    );
}
