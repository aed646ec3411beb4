//! The terminal: raw mode and the alternate screen on the way in, restored on the way
//! out, on an error and on a panic.

use std::io::{stdout, Stdout};

use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::event::{DisableMouseCapture, EnableMouseCapture};
use ratatui::crossterm::execute;
use ratatui::crossterm::terminal::{
    disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen,
};
use ratatui::Terminal;

/// The terminal the viewer draws on.
pub(crate) type Term = Terminal<CrosstermBackend<Stdout>>;

/// Restores the terminal when dropped.
pub(crate) struct Guard;

impl Drop for Guard {
    fn drop(&mut self) {
        restore();
    }
}

/// Enters raw mode and the alternate screen; a panic restores the terminal before its
/// message is printed.
pub(crate) fn setup() -> anyhow::Result<(Term, Guard)> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        restore();
        hook(info);
    }));
    enable_raw_mode()?;
    let guard = Guard;
    execute!(stdout(), EnterAlternateScreen, EnableMouseCapture)?;
    let term = Terminal::new(CrosstermBackend::new(stdout()))?;
    Ok((term, guard))
}

/// Leaves the alternate screen and raw mode (harmless if already restored).
fn restore() {
    let _ = execute!(stdout(), DisableMouseCapture, LeaveAlternateScreen);
    let _ = disable_raw_mode();
    let _ = execute!(stdout(), ratatui::crossterm::cursor::Show);
}

/// Terminal events (keys, mouse, resizes) from a thread that blocks in `event::read`, so the
/// viewer's loop can sleep on them together with its other sources. The thread ends when
/// the receiver is dropped (after its next event) or reading fails (the error is sent).
pub(crate) fn spawn_key_reader(
) -> std::io::Result<crossbeam_channel::Receiver<std::io::Result<ratatui::crossterm::event::Event>>>
{
    // Bounded: a key the loop has not taken yet holds the reader back, nothing piles up.
    let (tx, rx) = crossbeam_channel::bounded(64);
    std::thread::Builder::new()
        .name("view-keys".into())
        .spawn(move || loop {
            let ev = ratatui::crossterm::event::read();
            let failed = ev.is_err();
            if tx.send(ev).is_err() || failed {
                return;
            }
        })?;
    Ok(rx)
}
