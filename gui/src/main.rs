//! `firehose-gui`: the desktop monitor.

use std::path::PathBuf;

use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "firehose-gui",
    version,
    about = "A desktop monitor of the Firehose service's file events"
)]
struct Args {
    /// Control socket path [default: $XDG_RUNTIME_DIR/firehose/firehose.sock, else
    /// /tmp/firehose-<uid>/firehose.sock].
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Most rows held in memory.
    #[arg(long, value_name = "ROWS", default_value_t = 100_000)]
    rows: usize,
    /// Read losslessly (the service holds back for this reader, within its budget).
    #[arg(long)]
    lossless: bool,
    /// Start at this seq (older rows come from history) instead of the newest.
    #[arg(long, value_name = "N")]
    from_seq: Option<u64>,
    /// After this many seconds print frames/s, records/s, lag, CPU and peak memory to
    /// stderr and close (for measuring).
    #[arg(long, value_name = "SECS")]
    stats_after: Option<u64>,
    /// Window size, WIDTHxHEIGHT in points.
    #[arg(long, default_value = "1280x800")]
    size: String,
}

fn main() {
    let a = Args::parse();
    if let Err(e) = run(&a) {
        eprintln!("firehose-gui: {e:#}");
        std::process::exit(1);
    }
}

fn run(a: &Args) -> anyhow::Result<()> {
    let (w, h) = a
        .size
        .split_once('x')
        .and_then(|(w, h)| Some((w.parse::<f32>().ok()?, h.parse::<f32>().ok()?)))
        .ok_or_else(|| anyhow::anyhow!("--size {:?}: expected WIDTHxHEIGHT", a.size))?;
    let cfg = firehose_gui::Config {
        socket: a.socket.clone(),
        rows: a.rows,
        lossless: a.lossless,
        from_seq: a.from_seq,
    };
    let stats_after = a.stats_after;
    let options = eframe::NativeOptions {
        viewport: eframe::egui::ViewportBuilder::default()
            .with_title("Firehose")
            .with_inner_size([w, h]),
        // Dithering costs every pixel a noise function, in software GL a large share of
        // the frame; a table of text shows no banding to hide.
        dithering: false,
        ..eframe::NativeOptions::default()
    };
    eframe::run_native(
        "firehose-gui",
        options,
        Box::new(move |cc| {
            let ctx = cc.egui_ctx.clone();
            // New records ask for a frame one frame after the last began: a burst of
            // batches is one frame, and under load the window redraws at the display's
            // pace, not per batch.
            // Never a zero delay: egui answers that with two frames, not one.
            let mut monitor = firehose_gui::connect(&cfg, move |delay| {
                ctx.request_repaint_after(delay.max(std::time::Duration::from_micros(1)))
            })?;
            monitor.stats_after = stats_after.map(std::time::Duration::from_secs);
            Ok(Box::new(monitor))
        }),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))
}
