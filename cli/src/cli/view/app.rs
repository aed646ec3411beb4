//! [`App`]: the viewer's state without a terminal. The rows, the filter, follow and pause,
//! history paging, the counters and the rate are the library's monitor model (the same one
//! the desktop monitor drives); this adds what a terminal needs on top: the keyboard mode,
//! the selection and the first row in view (by seq, so they stay put while rows come and
//! go), the detail pane and the table's height.

use firehose_consumer::monitor::Model;
use firehose_consumer::pages::{PageAnswer, PageRequest};
use firehose_consumer::EventKind;

pub(crate) use firehose_consumer::monitor::Conn;

/// What the keyboard is talking to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// The table.
    Normal,
    /// The filter box, with the text to restore on Esc.
    Filter(String),
    /// The "go to" box: a seq, or a time (RFC 3339 or relative, like `10m`).
    GoTo(String),
    /// The help overlay.
    Help,
}

/// The viewer's state.
#[derive(Debug)]
pub(crate) struct App {
    /// Rows, filter, paging, counters: the shared monitor model.
    pub(crate) m: Model,
    /// Keyboard mode.
    pub(crate) mode: Mode,
    /// The selected row's seq (when not following).
    sel: u64,
    /// The first row in view's seq (when not following).
    top: u64,
    /// The detail pane is open.
    pub(crate) detail: bool,
    /// Table rows on screen (set by the drawing).
    pub(crate) height: usize,
    /// A "go to" request to send.
    jump: Option<PageRequest>,
    /// Something changed since the last draw.
    pub(crate) dirty: bool,
}

impl App {
    /// A viewer holding at most `cap` rows.
    pub(crate) fn new(cap: usize) -> App {
        App {
            m: Model::new(cap),
            mode: Mode::Normal,
            sel: 0,
            top: 0,
            detail: false,
            height: 20,
            jump: None,
            dirty: true,
        }
    }

    /// The index among the shown rows of the first row in view, and of the selected one;
    /// keeps the selection in view.
    pub(crate) fn window(&mut self) -> (usize, usize) {
        if let Some(seq) = self.m.scroll_to.take() {
            (self.sel, self.top) = (seq, seq);
        }
        let n = self.m.shown_len();
        let h = self.height.max(1);
        if n == 0 {
            return (0, 0);
        }
        if self.m.follow {
            return (n.saturating_sub(h), n - 1);
        }
        let sel = self.m.shown_index_of(self.sel).min(n - 1);
        let mut top = self.m.shown_index_of(self.top).min(sel);
        if sel >= top + h {
            top = sel + 1 - h;
        }
        self.sel = self.seq_at(sel);
        self.top = self.seq_at(top);
        self.m.selected = Some(self.sel);
        (top, sel)
    }

    fn seq_at(&mut self, i: usize) -> u64 {
        self.m.shown_row(i).map_or(0, |r| r.seq)
    }

    /// The selected row.
    pub(crate) fn selected(&mut self) -> Option<&firehose_consumer::monitor::Row> {
        let (_, sel) = self.window();
        self.m.shown_row(sel)
    }

    /// Stops following, holding the current view (new rows wait aside).
    fn hold(&mut self) {
        if self.m.follow {
            let (top, sel) = self.window();
            self.top = self.seq_at(top);
            self.sel = self.seq_at(sel);
            self.m.set_follow(false);
        }
    }

    /// Moves the selection by `delta` shown rows (negative: up). Moving into the top asks
    /// history for older rows; moving onto the newest row asks for newer ones while
    /// browsing history, and follows again otherwise.
    pub(crate) fn move_by(&mut self, delta: isize) {
        self.dirty = true;
        self.hold();
        let n = self.m.shown_len();
        if n == 0 {
            self.m.want_older = delta < 0;
            return;
        }
        let (_, sel) = self.window();
        let to = sel.saturating_add_signed(delta).min(n - 1);
        self.sel = self.seq_at(to);
        if delta < 0 {
            self.m.want_older = to == 0;
            self.m.want_newer = false;
        } else {
            self.m.want_older = false;
            if to == n - 1 {
                if self.m.detached() {
                    self.m.want_newer = true;
                } else if !self.m.paused {
                    self.m.set_follow(true);
                }
            }
        }
    }

    /// Page up or down.
    pub(crate) fn page(&mut self, pages: isize) {
        self.move_by(pages * self.height.max(1) as isize);
    }

    /// To the oldest row held (and ask history for older ones).
    pub(crate) fn home(&mut self) {
        self.move_by(isize::MIN / 2);
    }

    /// Follows the newest rows again (`End`, `G`, `f`): history browsed is let go, and a
    /// page above the live rows fills the table.
    pub(crate) fn resume(&mut self) {
        self.dirty = true;
        self.jump = None;
        self.m.follow_newest();
    }

    /// The pause key: holds the view still, or resumes following.
    pub(crate) fn toggle_pause(&mut self) {
        if self.m.paused {
            self.resume();
        } else {
            self.hold();
            self.m.set_paused(true);
            self.dirty = true;
        }
    }

    /// Opens the filter box (searching stops following).
    pub(crate) fn open_filter(&mut self) {
        self.hold();
        self.mode = Mode::Filter(self.m.filter().text().to_string());
        self.dirty = true;
    }

    /// Sets the filter text (as it is typed).
    pub(crate) fn set_filter_text(&mut self, text: &str) {
        self.m.set_filter(text);
        self.dirty = true;
    }

    /// Closes the filter box, keeping the text (Enter) or restoring the old one (Esc).
    pub(crate) fn close_filter(&mut self, keep: bool) {
        if let Mode::Filter(old) = std::mem::replace(&mut self.mode, Mode::Normal) {
            if !keep {
                self.set_filter_text(&old);
            }
        }
        self.dirty = true;
    }

    /// Opens the "go to" box.
    pub(crate) fn open_go_to(&mut self) {
        self.mode = Mode::GoTo(String::new());
        self.dirty = true;
    }

    /// Closes the "go to" box; with `now_ns`, jumps to what it holds (a seq or a time
    /// before `now_ns`), else cancels.
    pub(crate) fn close_go_to(&mut self, now_ns: Option<u64>) {
        if let (Mode::GoTo(text), Some(now)) =
            (std::mem::replace(&mut self.mode, Mode::Normal), now_ns)
        {
            match self.m.go_to(&text, now) {
                Ok(r) => self.jump = Some(r),
                Err(e) => self.m.paging.error = Some(e),
            }
        }
        self.dirty = true;
    }

    /// Keys 1..7: shows or hides a kind.
    pub(crate) fn toggle_kind(&mut self, kind: EventKind) {
        self.m.toggle(kind);
        self.dirty = true;
    }

    /// The history request to send now: a jump, or the page scrolling asks for.
    pub(crate) fn history_request(&mut self) -> Option<PageRequest> {
        self.jump.take().or_else(|| self.m.history_request())
    }

    /// An answer from history.
    pub(crate) fn history_answer(&mut self, a: PageAnswer) {
        self.dirty = true;
        self.m.history_answer(a);
    }
}

#[cfg(test)]
mod tests;
