//! Keys (and the mouse wheel) applied to the [`App`].

use ratatui::crossterm::event::{
    Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseEventKind,
};

use firehose_consumer::EventKind;

use super::app::{App, Mode};

/// The kinds keys 1..7 toggle, in order.
pub(crate) const TOGGLED: [EventKind; 7] = EventKind::FILTERABLE;

/// What the loop does after an input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flow {
    /// Carry on.
    Go,
    /// Quit the viewer.
    Quit,
}

/// Applies one terminal event.
pub(crate) fn handle(app: &mut App, ev: &Event) -> Flow {
    match ev {
        Event::Key(k) if k.kind != KeyEventKind::Release => key(app, k),
        Event::Mouse(m) => {
            match m.kind {
                MouseEventKind::ScrollUp => app.move_by(-3),
                MouseEventKind::ScrollDown => app.move_by(3),
                _ => {}
            }
            Flow::Go
        }
        Event::Resize(..) => {
            app.dirty = true;
            Flow::Go
        }
        _ => Flow::Go,
    }
}

fn key(app: &mut App, k: &KeyEvent) -> Flow {
    if k.modifiers.contains(KeyModifiers::CONTROL) && k.code == KeyCode::Char('c') {
        return Flow::Quit;
    }
    match app.mode.clone() {
        Mode::Filter(_) => filter_key(app, k),
        Mode::GoTo(_) => go_to_key(app, k),
        Mode::Help => {
            app.mode = Mode::Normal;
            app.dirty = true;
            if k.code == KeyCode::Char('q') {
                return Flow::Quit;
            }
        }
        Mode::Normal => return normal_key(app, k),
    }
    Flow::Go
}

fn filter_key(app: &mut App, k: &KeyEvent) {
    let mut text = app.m.filter().text().to_string();
    match k.code {
        KeyCode::Esc => return app.close_filter(false),
        KeyCode::Enter => return app.close_filter(true),
        KeyCode::Backspace => {
            text.pop();
        }
        KeyCode::Char('u') if k.modifiers.contains(KeyModifiers::CONTROL) => text.clear(),
        KeyCode::Char(c) => text.push(c),
        _ => return,
    }
    app.set_filter_text(&text);
}

fn go_to_key(app: &mut App, k: &KeyEvent) {
    let Mode::GoTo(text) = &mut app.mode else {
        return;
    };
    match k.code {
        KeyCode::Esc => return app.close_go_to(None),
        KeyCode::Enter => {
            let now = firehose_consumer::time::now_ns();
            return app.close_go_to(Some(now));
        }
        KeyCode::Backspace => {
            text.pop();
        }
        KeyCode::Char('u') if k.modifiers.contains(KeyModifiers::CONTROL) => text.clear(),
        KeyCode::Char(c) => text.push(c),
        _ => return,
    }
    app.dirty = true;
}

fn normal_key(app: &mut App, k: &KeyEvent) -> Flow {
    let ctrl = k.modifiers.contains(KeyModifiers::CONTROL);
    match k.code {
        KeyCode::Char('q') => return Flow::Quit,
        KeyCode::Up | KeyCode::Char('k') => app.move_by(-1),
        KeyCode::Down | KeyCode::Char('j') => app.move_by(1),
        KeyCode::PageUp => app.page(-1),
        KeyCode::PageDown => app.page(1),
        KeyCode::Char('b') if ctrl => app.page(-1),
        KeyCode::Char('f') if ctrl => app.page(1),
        KeyCode::Home | KeyCode::Char('g') => app.home(),
        KeyCode::End | KeyCode::Char('G') | KeyCode::Char('f') => app.resume(),
        KeyCode::Char('p') | KeyCode::Char(' ') => app.toggle_pause(),
        KeyCode::Char('/') => app.open_filter(),
        KeyCode::Char(':') => app.open_go_to(),
        KeyCode::Enter | KeyCode::Char('d') => {
            app.detail = !app.detail;
            app.dirty = true;
        }
        KeyCode::Esc => {
            app.detail = false;
            app.dirty = true;
        }
        KeyCode::Char('?') => {
            app.mode = Mode::Help;
            app.dirty = true;
        }
        KeyCode::Char(c @ '1'..='7') => {
            app.toggle_kind(TOGGLED[c as usize - '1' as usize]);
        }
        _ => {}
    }
    Flow::Go
}
