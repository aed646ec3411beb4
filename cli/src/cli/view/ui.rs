//! Drawing: header and kind toggles, counters and the sparkline, the banner, the table,
//! the detail pane, the filter box and help line, and the help overlay.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Clear, Paragraph, Row as TRow, Sparkline, Table};
use ratatui::Frame;

use super::app::{App, Conn, Mode};
use super::input::TOGGLED;
use firehose_consumer::monitor::{Filter, Row};
use firehose_consumer::time::rfc3339;

const HELP_LINE: &str = "q quit  ↑↓/jk move  PgUp/PgDn  g/Home top  G/End/f follow  p/space pause  / filter  : go to  1-7 kinds  Enter/d detail  ? help";

/// Draws the whole screen.
pub(crate) fn draw(f: &mut Frame<'_>, app: &mut App) {
    let banner = banner(app);
    let detail_h = if app.detail { 7 } else { 0 };
    let [head, stats, spark, ban, table, detail, foot] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Length(2),
        Constraint::Length(u16::from(banner.is_some())),
        Constraint::Min(3),
        Constraint::Length(detail_h),
        Constraint::Length(1),
    ])
    .areas(f.area());
    f.render_widget(Paragraph::new(header(app)), head);
    f.render_widget(Paragraph::new(counters(app)), stats);
    let data = app.m.rate.history();
    f.render_widget(
        Sparkline::default()
            .data(&data)
            .style(Style::default().fg(Color::Cyan)),
        spark,
    );
    if let Some(b) = banner {
        f.render_widget(Paragraph::new(b), ban);
    }
    draw_table(f, app, table);
    if app.detail {
        draw_detail(f, app, detail);
    }
    f.render_widget(Paragraph::new(footer(app)), foot);
    if app.mode == Mode::Help {
        draw_help(f);
    }
}

fn header(app: &App) -> Line<'static> {
    let state = if app.m.paused {
        Span::styled(
            " PAUSED ",
            Style::default().bg(Color::Yellow).fg(Color::Black),
        )
    } else if app.m.detached() {
        Span::styled(
            " HISTORY ",
            Style::default().bg(Color::Magenta).fg(Color::White),
        )
    } else if app.m.follow {
        Span::styled(
            " FOLLOW ",
            Style::default().bg(Color::Green).fg(Color::Black),
        )
    } else {
        Span::styled(
            " SCROLL ",
            Style::default().bg(Color::Blue).fg(Color::White),
        )
    };
    let mut spans = vec![Span::raw("firehose view "), state, Span::raw("  kinds:")];
    for (i, k) in TOGGLED.iter().enumerate() {
        let on = app.m.kind_shown(*k);
        let style = if on {
            Style::default().fg(kind_color(*k))
        } else {
            Style::default()
                .fg(Color::DarkGray)
                .add_modifier(Modifier::CROSSED_OUT)
        };
        spans.push(Span::styled(format!(" {}:{}", i + 1, k.name()), style));
    }
    Line::from(spans)
}

fn counters(app: &mut App) -> Line<'static> {
    let c = app.m.counts;
    let range = match (app.m.rows.front(), app.m.rows.back()) {
        (Some(a), Some(b)) => format!("seq {}..{}", a.seq, b.seq),
        _ => "seq -".into(),
    };
    let warn = |n: u64| {
        if n > 0 {
            Style::default().fg(Color::Red).add_modifier(Modifier::BOLD)
        } else {
            Style::default()
        }
    };
    let mut spans = vec![
        Span::raw(format!(
            "rows {} {range}  shown {}  dropped {}  ",
            app.m.rows.len(),
            app.m.shown_len(),
            c.dropped
        )),
        Span::styled(format!("lagged {}", c.lagged), warn(c.lagged)),
        Span::raw("  "),
        Span::styled(format!("gaps {}", c.gaps), warn(c.gaps)),
        Span::raw("  "),
        Span::styled(format!("overflow {}", c.overflows), warn(c.overflows)),
        Span::raw(format!("  {}/s", app.m.rate.last())),
    ];
    if c.not_stored > 0 {
        spans.push(Span::raw(format!("  not stored {}", c.not_stored)));
    }
    if c.missing > 0 {
        spans.push(Span::styled(format!("  missing {}", c.missing), warn(1)));
    }
    if app.m.held_len() > 0 {
        spans.push(Span::raw(format!(
            "  new rows held {} (End: live)",
            app.m.held_len()
        )));
    }
    Line::from(spans)
}

fn banner(app: &App) -> Option<Line<'static>> {
    let (text, bg) =
        match &app.m.conn {
            Conn::Up(None) => {
                return app.m.paging.error.as_ref().map(|e| {
                    Line::styled(format!(" history: {e}"), Style::default().fg(Color::Red))
                })
            }
            Conn::Up(Some(seq)) => (
                format!(" reconnected: live resumed at seq {seq}"),
                Color::Green,
            ),
            Conn::Down(why) => (
                format!(" the service went away ({why}); reconnecting…"),
                Color::Red,
            ),
            Conn::Ended(why) => (format!(" {why}; nothing more will arrive"), Color::Red),
        };
    Some(Line::styled(
        text,
        Style::default()
            .bg(bg)
            .fg(Color::White)
            .add_modifier(Modifier::BOLD),
    ))
}

fn draw_table(f: &mut Frame<'_>, app: &mut App, area: Rect) {
    app.height = usize::from(area.height.saturating_sub(1)).max(1);
    let (top, sel) = app.window();
    let end = (top + app.height).min(app.m.shown_len());
    let follow = app.m.follow;
    let filter = app.m.filter().clone();
    let rows: Vec<TRow<'_>> = (top..end)
        .filter_map(|i| {
            let t = table_row(app.m.shown_row(i)?, &filter);
            Some(if i == sel && !follow {
                t.style(Style::default().add_modifier(Modifier::REVERSED))
            } else {
                t
            })
        })
        .collect();
    let mut title = String::new();
    if app.m.paging.in_flight.is_some() {
        title.push_str(" loading history… ");
    } else if app.m.paging.older_done && !follow && top == 0 {
        title.push_str(" start of history ");
    }
    let widths = [
        Constraint::Length(12),
        Constraint::Length(11),
        Constraint::Min(20),
        Constraint::Length(6),
    ];
    let header = TRow::new(["time", "kind", "path", "rule"])
        .style(Style::default().add_modifier(Modifier::BOLD | Modifier::UNDERLINED));
    let mut table = Table::new(rows, widths).header(header);
    if !title.is_empty() {
        table = table.block(Block::default().title_bottom(title));
    }
    f.render_widget(table, area);
}

fn table_row(r: &Row, filter: &Filter) -> TRow<'static> {
    let time = rfc3339(r.time_ns);
    let mut path = highlighted(&r.path, filter);
    if let Some(to) = &r.to {
        path.push(Span::styled(" -> ", Style::default().fg(Color::DarkGray)));
        path.extend(highlighted(to, filter));
    }
    TRow::new([
        Cell::from(time.get(11..23).unwrap_or("").to_string()),
        Cell::from(Span::styled(
            r.kind.name(),
            Style::default().fg(kind_color(r.kind)),
        )),
        Cell::from(Line::from(path)),
        Cell::from(r.rule.to_string()),
    ])
}

fn highlighted(text: &str, filter: &Filter) -> Vec<Span<'static>> {
    let mut out = Vec::new();
    let mut at = 0;
    for (a, b) in filter.highlights(text) {
        if a > at {
            out.push(Span::raw(text[at..a].to_string()));
        }
        out.push(Span::styled(
            text[a..b].to_string(),
            Style::default().bg(Color::Yellow).fg(Color::Black),
        ));
        at = b;
    }
    if at < text.len() {
        out.push(Span::raw(text[at..].to_string()));
    }
    out
}

fn kind_color(k: firehose_consumer::EventKind) -> Color {
    use firehose_consumer::EventKind as K;
    match k {
        K::Create => Color::Green,
        K::Modify => Color::Yellow,
        K::CloseWrite => Color::Cyan,
        K::Metadata => Color::Magenta,
        K::Remove => Color::Red,
        K::Rename => Color::Blue,
        K::Overflow | K::Gap | K::BlindStart | K::BlindEnd => Color::LightRed,
        K::Other => Color::Gray,
    }
}

fn draw_detail(f: &mut Frame<'_>, app: &mut App, area: Rect) {
    let lines = match app.selected() {
        None => vec![Line::raw("no row selected")],
        Some(r) => {
            let mut l = vec![
                Line::raw(format!(
                    "seq   {}   kind {}   rule {}",
                    r.seq,
                    r.kind.name(),
                    r.rule
                )),
                Line::raw(format!("time  {} ({} ns)", rfc3339(r.time_ns), r.time_ns)),
                Line::raw(format!("path  {}", r.path)),
            ];
            if let Some(to) = &r.to {
                l.push(Line::raw(format!("to    {to}")));
            }
            l.push(Line::raw(format!(
                "size  {}",
                r.size.map_or("unknown".into(), |s| s.to_string())
            )));
            l
        }
    };
    f.render_widget(
        Paragraph::new(lines).block(Block::default().borders(Borders::TOP).title(" detail ")),
        area,
    );
}

fn footer(app: &App) -> Line<'static> {
    let text = app.m.filter().text();
    match &app.mode {
        Mode::Filter(_) => Line::from(vec![
            Span::styled("/", Style::default().fg(Color::Yellow)),
            Span::raw(text.to_string()),
            Span::styled("█", Style::default().fg(Color::Yellow)),
            Span::styled(
                "   (glob if it has * ? [ {, whole path, * crosses /; else substring; Enter keeps, Esc cancels)",
                Style::default().fg(Color::DarkGray),
            ),
        ]),
        Mode::GoTo(to) => Line::from(vec![
            Span::styled("go to: ", Style::default().fg(Color::Yellow)),
            Span::raw(to.clone()),
            Span::styled("█", Style::default().fg(Color::Yellow)),
            Span::styled(
                "   (a seq, 10m, 2h, or an RFC 3339 time; Enter jumps, Esc cancels)",
                Style::default().fg(Color::DarkGray),
            ),
        ]),
        _ if !text.is_empty() => Line::from(vec![
            Span::styled(format!("filter: {text}  "), Style::default().fg(Color::Yellow)),
            Span::styled(HELP_LINE, Style::default().fg(Color::DarkGray)),
        ]),
        _ => Line::styled(HELP_LINE, Style::default().fg(Color::DarkGray)),
    }
}

fn draw_help(f: &mut Frame<'_>) {
    let text = [
        "q, Ctrl-C        quit",
        "↑ ↓ k j          move the selection (scrolling up stops following)",
        "PgUp PgDn        a page up or down (Ctrl-B, Ctrl-F too)",
        "g Home           the oldest row held; again: older rows from history",
        "G End f          follow the newest rows again",
        "p space          pause: hold the view still (rows are still counted)",
        "/                filter: glob (* ? [ {) or substring, as you type",
        ":                go to a seq or a time (10m, RFC 3339) in history",
        "1..7             show or hide create, modify, close_write, metadata,",
        "                 remove, rename, overflow",
        "Enter d          the detail pane for the selected row",
        "?                this help (any key closes it)",
    ];
    let area = f.area();
    let w = 76.min(area.width);
    let h = (text.len() as u16 + 2).min(area.height);
    let r = Rect::new((area.width - w) / 2, (area.height - h) / 2, w, h);
    f.render_widget(Clear, r);
    f.render_widget(
        Paragraph::new(text.iter().map(|s| Line::raw(*s)).collect::<Vec<_>>())
            .block(Block::default().borders(Borders::ALL).title(" help ")),
        r,
    );
}

#[cfg(test)]
mod tests {
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;

    use super::super::app::App;
    use super::*;
    use firehose_consumer::{EventKind, Loss, OwnedEvent};

    fn screen(app: &mut App) -> String {
        let mut t = Terminal::new(TestBackend::new(100, 24)).unwrap();
        t.draw(|f| draw(f, app)).unwrap();
        let buf = t.backend().buffer().clone();
        let mut s = String::new();
        for y in 0..buf.area.height {
            for x in 0..buf.area.width {
                s.push_str(buf[(x, y)].symbol());
            }
            s.push('\n');
        }
        s
    }

    #[test]
    fn draws_rows_counters_detail_and_banner() {
        let mut app = App::new(100);
        let e = firehose_consumer::FileEvent {
            seq: 7,
            time_ns: 1_500_000_123,
            kind: EventKind::Rename,
            path: b"/d/old".to_vec(),
            path_to: Some(b"/d/new".to_vec()),
            rule: 2,
            size: Some(42),
            reconciled: false,
            blind: None,
            gap: None,
        };
        app.m.ingest_event(OwnedEvent::Record(e));
        app.m
            .ingest_event(OwnedEvent::Loss(Loss::Lagged { from: 1, to: 3 }));
        app.detail = true;
        let s = screen(&mut app);
        assert!(s.contains("/d/old -> /d/new"), "{s}");
        assert!(s.contains("lagged 3"), "{s}");
        assert!(s.contains("size  42"), "{s}");
        assert!(s.contains("1970-01-01T00:00:01.500000123Z"), "{s}");
        assert!(s.contains("FOLLOW"), "{s}");
        app.m.ingest_event(OwnedEvent::Disconnected {
            reason: firehose_consumer::DisconnectReason::ShuttingDown,
            detail: "gone".into(),
        });
        assert!(screen(&mut app).contains("reconnecting"));
    }
}
