//! `firehose view`: a live terminal viewer. The loop drains the ring once per frame into a
//! bounded buffer, redraws at most every [`FRAME`] (and only when something changed), and
//! sends history page requests to a worker thread so it never waits.

mod app;
mod buffer;
mod filter;
mod glob;
mod history;
mod input;
mod paging;
mod rate;
mod row;
mod term;
mod ui;

use std::time::{Duration, Instant};

use firehose_consumer::{Options, Policy, Start};
use ratatui::crossterm::event;

use super::{code, Cli};
use app::App;
use input::Flow;

/// The shortest time between two frames.
const FRAME: Duration = Duration::from_millis(33);
/// The most events one frame takes from the follower.
const DRAIN_MAX: usize = 200_000;

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
}

pub(crate) fn run(cli: &Cli, a: &Args) -> anyhow::Result<i32> {
    let socket = cli.socket()?;
    let mut f = Options::new()
        .socket(socket.clone())
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
    let worker = history::Worker::start(socket);
    let mut app = App::new(a.buffer);
    app.live_next = f.next_seq();
    let (mut term, _guard) = term::setup()?;
    let started = Instant::now();
    let mut next_frame = Instant::now();
    loop {
        // Keys: wait for one until the next frame is due.
        let wait = next_frame.saturating_duration_since(Instant::now());
        if event::poll(wait)? {
            while event::poll(Duration::ZERO)? {
                if input::handle(&mut app, &event::read()?) == Flow::Quit {
                    return Ok(code::OK);
                }
            }
        }
        if Instant::now() < next_frame {
            continue;
        }
        next_frame = Instant::now() + FRAME;
        // Once per frame: everything the ring has (never waits for it).
        let before = app.counts.received;
        match f.drain(DRAIN_MAX) {
            Ok(evs) => {
                for ev in evs {
                    app.ingest(&ev);
                }
            }
            Err(e) => {
                app.conn = app::Conn::Ended(e.to_string());
                app.dirty = true;
            }
        }
        app.live_next = f.next_seq();
        let sec = started.elapsed().as_secs();
        if app.rate.add(sec, app.counts.received - before) {
            app.dirty = true;
        }
        while let Some((id, answer)) = worker.try_answer() {
            app.history_answer(id, answer);
        }
        if let Some(r) = app.history_request() {
            worker.ask(r);
            app.dirty = true;
        }
        if app.dirty {
            app.dirty = false;
            term.draw(|fr| ui::draw(fr, &mut app))?;
        }
    }
}
