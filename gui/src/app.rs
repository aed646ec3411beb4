//! The window: a top bar (pause, follow, filter, kind toggles, counters, the service-loss
//! banner), the live table in the middle (virtualised: only the rows in view are laid
//! out), and on the right the selected row, the rate over the last minute and the
//! service's status.

use std::time::Instant;

use eframe::egui::{self, Color32, RichText};
use firehose_consumer::pages::Direction;
use firehose_consumer::{Background, OwnedEvent, Policy, Status};

use crate::model::{Conn, Model};

/// The monitor: the model, the follower's thread and the status.
#[derive(Debug)]
pub struct Monitor {
    /// What is shown.
    pub model: Model,
    /// The follower's thread: records, history pages and the status, on one connection.
    live: Background,
    started: Instant,
    filter_text: String,
    goto_text: String,
    /// Told when each frame begins (the follower's repaint requests are paced by it).
    pacer: crate::pace::Pacer,
    /// The seq of the first row in view on the last frame (kept in view when a page of
    /// history comes in).
    top_seq: Option<u64>,
    /// Scroll to the oldest row held on the next frame (Home).
    scroll_top: bool,
    /// Frames drawn (for `--stats`).
    pub frames: u64,
    /// Scroll to the newest row on the next frame.
    jump: bool,
    /// Print the stats line and close after this long (`--stats-after`).
    pub stats_after: Option<std::time::Duration>,
    /// With `--stats-after`: for each record (up to a million), ns from the watcher
    /// reading its event (the record's time) to the frame that shows it.
    latencies: Vec<u64>,
    /// With `--stats-after`: for each frame that took records, ns from the oldest of them
    /// coming off the ring (in the follower) to the frame.
    waits: Vec<u64>,
    /// With `--stats-after`: for each frame that took records (none dropped), ns from the
    /// watcher reading the oldest of them to the follower taking it off the ring.
    arrivals: Vec<u64>,
    /// Time spent in the frame's parts (for `--stats-after`'s profile).
    times: crate::profile::FrameTimes,
}

const ROW_H: f32 = 18.0;

impl Monitor {
    /// A monitor over a follower already on its thread (which also pages history and
    /// polls the status); `pacer` is the one the follower's repaint requests ask.
    pub fn new(live: Background, cap: usize, pacer: crate::pace::Pacer) -> Monitor {
        Monitor {
            model: Model::new(cap),
            live,
            started: Instant::now(),
            filter_text: String::new(),
            goto_text: String::new(),
            pacer,
            top_seq: None,
            scroll_top: false,
            frames: 0,
            jump: false,
            stats_after: None,
            latencies: Vec::new(),
            waits: Vec::new(),
            arrivals: Vec::new(),
            times: crate::profile::FrameTimes::default(),
        }
    }

    /// One frame: take what the follower gathered, then draw.
    pub fn show(&mut self, ui: &mut egui::Ui) {
        self.pacer.frame_began();
        self.frames += 1;
        if let Some(after) = self.stats_after {
            let elapsed = self.started.elapsed();
            if elapsed >= after {
                eprintln!("{}", self.stats_line());
                self.stats_after = None;
                ui.ctx().send_viewport_cmd(egui::ViewportCommand::Close);
            } else {
                // On time even if nothing else asks for a frame.
                ui.ctx().request_repaint_after(after - elapsed);
            }
        }
        let sec = self.started.elapsed().as_secs();
        // Before the take: it never runs ahead of the records taken (history fills up to it).
        let taking = Instant::now();
        let live_next = self.live.next_seq();
        let got = self.live.take();
        self.times.ingest += taking.elapsed();
        if let (Some(_), Some(at)) = (self.stats_after, got.first_at) {
            self.waits.push(at.elapsed().as_nanos() as u64);
        }
        if self.stats_after.is_some() && self.latencies.len() < 1_000_000 {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            for ev in &got.events {
                if let OwnedEvent::Record(r) = ev {
                    self.latencies.push(now.saturating_sub(r.time_ns));
                }
            }
            let oldest = got.events.iter().find_map(|e| match e {
                OwnedEvent::Record(r) => Some(r.time_ns),
                _ => None,
            });
            if let (Some(t), Some(at), 0) = (oldest, got.first_at, got.dropped) {
                let off_ring = now.saturating_sub(at.elapsed().as_nanos() as u64);
                self.arrivals.push(off_ring.saturating_sub(t));
            }
        }
        let ingesting = Instant::now();
        self.model.ingest(got, sec);
        self.model.live_next = live_next;
        self.times.ingest += ingesting.elapsed();
        let laying_out = Instant::now();
        self.pages();
        self.keys(ui);
        // The panels paint no background of their own: the window is cleared to the
        // panels' colour (`clear_color`), and in software GL every full-window fill is a
        // large share of the frame.
        let style = ui.style().clone();
        egui::Panel::top("bar")
            .frame(egui::Frame::side_top_panel(&style).fill(Color32::TRANSPARENT))
            .show(ui, |ui| self.bar(ui));
        egui::Panel::right("side")
            .frame(egui::Frame::side_top_panel(&style).fill(Color32::TRANSPARENT))
            .default_size(360.0)
            .show(ui, |ui| self.side(ui));
        egui::CentralPanel::default()
            .frame(egui::Frame::central_panel(&style).fill(Color32::TRANSPARENT))
            .show(ui, |ui| self.table(ui));
        self.times.layout += laying_out.elapsed();
        // The sparkline moves once a second while it shows anything.
        if !self.model.rate.is_quiet() {
            ui.ctx()
                .request_repaint_after(std::time::Duration::from_secs(1));
        }
    }

    /// Frames, records, lag, CPU and peak memory over the monitor's life.
    pub fn stats_line(&self) -> String {
        let secs = self.started.elapsed().as_secs_f64().max(1e-9);
        let c = self.model.counts;
        let (cpu, rss_kib) = usage();
        let quantiles = |v: &[u64]| {
            let mut v = v.to_vec();
            v.sort_unstable();
            let q = |f: f64| {
                v.get(((v.len() as f64 * f) as usize).min(v.len().saturating_sub(1)))
                    .map_or(0.0, |&x| x as f64 / 1e3)
            };
            format!(
                "p50 {:.0} µs p99 {:.0} µs max {:.0} µs",
                q(0.5),
                q(0.99),
                q(1.0)
            )
        };
        format!(
            "firehose-gui: {} frames in {secs:.1} s ({:.1}/s), {} records ({:.0}/s), lagged {}, dropped from memory {}, CPU {cpu:.1} s ({:.0}% of one core), peak RSS {} MiB, record to frame {}, follower to frame (oldest record of each frame) {}, watcher to follower (the same record) {}; {}",
            self.frames,
            self.frames as f64 / secs,
            c.received,
            c.received as f64 / secs,
            c.lagged,
            c.dropped,
            cpu * 100.0 / secs,
            rss_kib / 1024,
            quantiles(&self.latencies),
            quantiles(&self.waits),
            quantiles(&self.arrivals),
            crate::profile::line(&self.times, secs),
        )
    }

    /// Takes history's answers (keeping the row in view where it was) and asks for the
    /// next page if scrolling wants one.
    fn pages(&mut self) {
        while let Some(a) = self.live.try_answer() {
            let moved = self.model.history_answer(a);
            if matches!(moved, Some(Direction::Older | Direction::Newer)) && !self.model.follow {
                self.model.scroll_to = self.model.scroll_to.or(self.top_seq);
            }
        }
        if let Some(r) = self.model.history_request() {
            self.live.ask(r);
        }
    }

    fn go_to(&mut self) {
        match self
            .model
            .go_to(&self.goto_text, firehose_consumer::time::now_ns())
        {
            Ok(r) => self.live.ask(r),
            Err(e) => self.model.paging.error = Some(e),
        }
    }

    fn keys(&mut self, ui: &mut egui::Ui) {
        if ui.ctx().text_edit_focused() {
            return;
        }
        let (space, end, home) = ui.input(|i| {
            (
                i.key_pressed(egui::Key::Space),
                i.key_pressed(egui::Key::End) || i.key_pressed(egui::Key::F),
                i.key_pressed(egui::Key::Home),
            )
        });
        if space {
            self.model.set_paused(!self.model.paused);
        }
        if end {
            self.follow_newest();
        }
        if home {
            // To the oldest row held, and older ones from history.
            self.model.set_follow(false);
            self.model.want_older = true;
            self.scroll_top = true;
        }
    }

    fn follow_newest(&mut self) {
        self.model.follow_newest();
        self.jump = true;
    }

    fn bar(&mut self, ui: &mut egui::Ui) {
        ui.horizontal(|ui| {
            ui.heading("Firehose");
            let pause = if self.model.paused { "Resume" } else { "Pause" };
            if ui.button(pause).clicked() {
                self.model.set_paused(!self.model.paused);
            }
            if ui
                .add_enabled(self.model.holding(), egui::Button::new("Follow newest"))
                .clicked()
            {
                self.follow_newest();
            }
            let label = ui.label("Filter");
            let edit = ui
                .add(
                    egui::TextEdit::singleline(&mut self.filter_text)
                        .hint_text("glob or substring")
                        .desired_width(220.0),
                )
                .labelled_by(label.id);
            if edit.changed() {
                self.model.set_filter(&self.filter_text);
            }
            for k in firehose_consumer::EventKind::FILTERABLE {
                let mut on = self.model.kind_shown(k);
                if ui.checkbox(&mut on, k.name()).changed() {
                    self.model.toggle(k);
                }
            }
            let label = ui.label("Go to");
            let edit = ui
                .add(
                    egui::TextEdit::singleline(&mut self.goto_text)
                        .hint_text("seq, 10m or RFC 3339")
                        .desired_width(170.0),
                )
                .labelled_by(label.id);
            let enter = edit.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
            if ui.button("Go").clicked() || enter {
                self.go_to();
            }
        });
        ui.horizontal(|ui| {
            let c = self.model.counts;
            let normal = ui.visuals().text_color();
            let warn = |n: u64| if n > 0 { Color32::LIGHT_RED } else { normal };
            let state = if self.model.paused {
                "PAUSED"
            } else if self.model.detached() {
                "BROWSING HISTORY (new rows held)"
            } else if !self.model.follow {
                "SCROLLED (new rows held)"
            } else {
                "FOLLOWING"
            };
            ui.label(RichText::new(state).strong());
            ui.label(format!(
                "rows {}  shown {}  received {}  dropped {}",
                self.model.rows.len(),
                self.model.shown_len(),
                c.received,
                c.dropped
            ));
            ui.label(RichText::new(format!("lagged {}", c.lagged)).color(warn(c.lagged)));
            if c.not_stored > 0 {
                ui.label(format!("not stored in history {}", c.not_stored));
            }
            if c.missing > 0 {
                ui.label(
                    RichText::new(format!("missing from history {}", c.missing))
                        .color(warn(c.missing)),
                );
            }
            ui.label(RichText::new(format!("gaps {}", c.gaps)).color(warn(c.gaps)));
            ui.label(RichText::new(format!("overflow {}", c.overflows)).color(warn(c.overflows)));
            let rate = self.model.rate.last();
            ui.label(format!("{rate} records/s"));
            if self.model.held_len() > 0 {
                ui.label(format!("{} new rows held", self.model.held_len()));
            }
            let p = &self.model.paging;
            if let Some(e) = &p.error {
                ui.label(RichText::new(format!("history: {e}")).color(Color32::LIGHT_RED));
            } else if p.in_flight.is_some() {
                ui.label("loading history…");
            } else if p.older_done && !self.model.follow {
                ui.label("start of history");
            }
        });
        match &self.model.conn {
            Conn::Up(Some(seq)) => {
                ui.label(
                    RichText::new(format!(
                        "Reconnected: live from seq {seq}, the gap backfilled from history"
                    ))
                    .color(Color32::LIGHT_GREEN),
                );
            }
            Conn::Up(None) => {}
            Conn::Down(why) => {
                ui.label(
                    RichText::new(format!("The service went away ({why}); reconnecting…"))
                        .color(Color32::YELLOW)
                        .strong(),
                );
            }
            Conn::Ended(why) => {
                ui.label(
                    RichText::new(format!("Disconnected for good: {why}"))
                        .color(Color32::LIGHT_RED)
                        .strong(),
                );
            }
        }
    }

    fn table(&mut self, ui: &mut egui::Ui) {
        ui.horizontal(|ui| {
            ui.monospace(format!(
                "{:<12} {:<11} {:>5} {:>9}  path",
                "time", "kind", "rule", "size"
            ));
        });
        let n = self.model.shown_len();
        let mut area = egui::ScrollArea::vertical()
            .auto_shrink(false)
            .stick_to_bottom(self.model.follow);
        let jumped = std::mem::take(&mut self.jump);
        let row_h = ROW_H + ui.spacing().item_spacing.y;
        let mut anchored = jumped;
        if jumped {
            // The end, not f32::MAX: egui's row range arithmetic overflows on that.
            area = area.vertical_scroll_offset(n as f32 * row_h);
        } else if let Some(seq) = self.model.scroll_to.take() {
            area = area.vertical_scroll_offset(self.model.shown_index_of(seq) as f32 * row_h);
            anchored = true;
        } else if std::mem::take(&mut self.scroll_top) {
            area = area.vertical_scroll_offset(0.0);
            anchored = true;
        }
        let mut top_seq = None;
        let out = area.show_rows(ui, ROW_H, n, |ui, range| {
            for i in range {
                let Some(row) = self.model.shown_row(i) else {
                    continue;
                };
                top_seq = top_seq.or(Some(row.seq));
                let path = match &row.to {
                    Some(to) => format!("{} -> {to}", row.path),
                    None => row.path.clone(),
                };
                let text = format!(
                    "{:<12} {:<11} {:>5} {:>9}  {path}",
                    row.clock(),
                    row.kind.name(),
                    row.rule,
                    row.size.map_or("-".into(), |s| s.to_string())
                );
                let seq = row.seq;
                let selected = self.model.selected == Some(seq);
                if row_widget(ui, selected, text).clicked() {
                    self.model.selected = Some(seq);
                }
            }
        });
        // Sticky follow: scrolled away from the bottom, the table holds still.
        // While following, the area sticks to the bottom by itself: away from it, the user
        // scrolled up; back at it, they came down again.
        // Browsing history, the bottom asks for newer pages instead, and the top (when there
        // is something to scroll) for older ones.
        self.top_seq = top_seq;
        if anchored {
            return;
        }
        let offset = out.state.clamped_offset().y;
        let at_bottom = offset + out.inner_rect.height() >= out.content_size.y - 2.0;
        // Rows that all fit are at the top and the bottom at once: only a real scroll asks.
        let scrollable = out.content_size.y > out.inner_rect.height();
        if self.model.detached() {
            if at_bottom && scrollable {
                self.model.want_newer = true;
            }
        } else if self.model.follow != at_bottom {
            self.model.set_follow(at_bottom);
        }
        if !self.model.follow && offset <= 0.5 && scrollable {
            self.model.want_older = true;
        }
    }

    fn side(&mut self, ui: &mut egui::Ui) {
        ui.heading("Selected");
        match self.model.selected_row() {
            Some(r) => {
                egui::Grid::new("detail").num_columns(2).show(ui, |ui| {
                    ui.label("seq");
                    ui.label(r.seq.to_string());
                    ui.end_row();
                    ui.label("kind");
                    ui.label(r.kind.name());
                    ui.end_row();
                    ui.label("path");
                    ui.label(&r.path);
                    ui.end_row();
                    if let Some(to) = &r.to {
                        ui.label("new path");
                        ui.label(to);
                        ui.end_row();
                    }
                    ui.label("rule");
                    ui.label(r.rule.to_string());
                    ui.end_row();
                    ui.label("size");
                    ui.label(r.size.map_or("unknown".into(), |s| format!("{s} bytes")));
                    ui.end_row();
                    ui.label("time (ns)");
                    ui.label(r.time_ns.to_string());
                    ui.end_row();
                });
            }
            None => {
                ui.label("Click a row to see its details.");
            }
        }
        ui.separator();
        ui.heading("Records/s, last minute");
        self.rate_plot(ui);
        ui.separator();
        ui.heading("Service");
        match self.live.status() {
            Ok((s, at)) => {
                // The uptime moves on between answers (asked for every few seconds).
                let mut s = s;
                s.uptime_ms += at.elapsed().as_millis() as u64;
                status_grid(ui, &s);
            }
            Err(e) => {
                ui.label(RichText::new(e).color(Color32::YELLOW));
            }
        }
    }

    fn rate_plot(&self, ui: &mut egui::Ui) {
        let (rect, _) =
            ui.allocate_exact_size(egui::vec2(ui.available_width(), 80.0), egui::Sense::hover());
        let p = ui.painter_at(rect);
        p.rect_stroke(
            rect,
            0.0,
            (1.0, ui.visuals().weak_text_color()),
            egui::StrokeKind::Inside,
        );
        // Whole seconds only: the current one is still counting.
        let pts = self.model.rate.history();
        let max = pts.iter().copied().max().unwrap_or(0).max(1) as f32;
        let line: Vec<egui::Pos2> = pts
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let x = rect.right() - (pts.len() - 1 - i) as f32 * rect.width() / 60.0;
                let y = rect.bottom() - 4.0 - (v as f32 / max) * (rect.height() - 8.0);
                egui::pos2(x, y)
            })
            .collect();
        if line.len() > 1 {
            p.add(egui::Shape::line(line, (1.5, Color32::LIGHT_BLUE)));
        }
        p.text(
            rect.left_top() + egui::vec2(4.0, 2.0),
            egui::Align2::LEFT_TOP,
            format!("max {max:.0}/s"),
            egui::FontId::monospace(11.0),
            ui.visuals().text_color(),
        );
    }
}

/// One table row: a line of monospace text, clickable, highlighted when selected, named
/// by its text for AccessKit.
///
/// Painted here rather than a `selectable_label`: a button styles itself by its state in
/// the previous frame and asks for another frame at once when it has none, which every row
/// scrolling into view at a thousand rows a second does: twice the frames for nothing.
fn row_widget(ui: &mut egui::Ui, selected: bool, text: String) -> egui::Response {
    let size = egui::vec2(ui.available_width(), ROW_H);
    let (rect, response) = ui.allocate_exact_size(size, egui::Sense::click());
    if ui.is_rect_visible(rect) {
        let v = ui.visuals();
        let fill = if selected {
            Some(v.selection.bg_fill)
        } else if response.hovered() {
            Some(v.widgets.hovered.weak_bg_fill)
        } else {
            None
        };
        if let Some(fill) = fill {
            ui.painter()
                .rect_filled(rect, v.widgets.hovered.corner_radius, fill);
        }
        let color = if selected {
            v.selection.stroke.color
        } else {
            v.text_color()
        };
        ui.painter().text(
            rect.left_center() + egui::vec2(ui.spacing().button_padding.x, 0.0),
            egui::Align2::LEFT_CENTER,
            &text,
            egui::TextStyle::Monospace.resolve(ui.style()),
            color,
        );
    }
    let enabled = ui.is_enabled();
    response
        .widget_info(|| egui::WidgetInfo::selected(egui::Role::Button, enabled, selected, &text));
    response
}

/// CPU seconds (user + system) and peak RSS in KiB of this process, from /proc.
fn usage() -> (f64, u64) {
    let cpu = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|st| {
            // Fields after the command's closing parenthesis; utime and stime are 14 and 15.
            let rest = st.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            let t = |i: usize| f.get(i - 3)?.parse::<f64>().ok();
            Some((t(14)? + t(15)?) / 100.0)
        })
        .unwrap_or(0.0);
    let rss = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|st| {
            st.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0);
    (cpu, rss)
}

fn status_grid(ui: &mut egui::Ui, s: &Status) {
    egui::Grid::new("status").num_columns(2).show(ui, |ui| {
        let mut row = |k: &str, v: String| {
            ui.label(k);
            ui.label(v);
            ui.end_row();
        };
        row("pid", s.pid.to_string());
        row("uptime", format!("{} s", s.uptime_ms / 1000));
        row("roots", s.roots.join("\n"));
        if s.unwatched_count > 0 {
            row("unwatched", format!("{} directories", s.unwatched_count));
        }
        row("rules", s.rules.to_string());
        row(
            "ring",
            format!(
                "{} KiB, {} KiB held",
                s.ring_capacity >> 10,
                s.ring_fill >> 10
            ),
        );
        row(
            "history",
            format!("{} rows, {} MiB", s.history_rows, s.history_bytes >> 20),
        );
        row("storage", s.storage.clone());
        row("health", s.health.clone());
    });
    ui.label(RichText::new("Readers").strong());
    egui::Grid::new("readers").num_columns(4).show(ui, |ui| {
        for r in &s.readers {
            ui.label(r.name.clone());
            ui.label(format!("pid {}", r.pid));
            ui.label(match r.policy {
                Policy::Lossless => "lossless",
                Policy::Lagging => "lagging",
            });
            ui.label(format!("lag {} KiB", r.lag_bytes >> 10));
            ui.end_row();
        }
    });
}

impl eframe::App for Monitor {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        self.show(ui);
    }

    fn logic(&mut self, _ctx: &egui::Context, _frame: &mut eframe::Frame) {
        // Also called without `ui` while the window is hidden: the next records ask for a
        // frame again (eframe then runs this again, and `ui` once it is shown).
        self.pacer.frame_began();
    }

    fn clear_color(&self, visuals: &egui::Visuals) -> [f32; 4] {
        // The panels' colour: they paint no background of their own (see `show`).
        visuals.panel_fill.to_normalized_gamma_f32()
    }
}
