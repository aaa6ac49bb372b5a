//! Drawing: a pure function of the app state and the time. Only the visible rows are built.

use chrono::{DateTime, Utc};
use ratatui::Frame;
use ratatui::layout::{Alignment, Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Clear, Paragraph, Row as TableRow, Sparkline, Table, Wrap};

use super::app::{App, Confirm, Dialog, Driver};
use super::keymap::{KEYMAP, footer_hints};
use crate::session::Status;
use crate::time::{format_ago, format_duration, format_until};

pub const MIN_WIDTH: u16 = 60;
pub const MIN_HEIGHT: u16 = 12;

struct Theme {
    color: bool,
}

impl Theme {
    fn fg(&self, color: Color) -> Style {
        if self.color { Style::new().fg(color) } else { Style::new() }
    }

    fn status(&self, status: Status) -> Style {
        let color = match status {
            Status::Ok => Color::Green,
            Status::Refreshing => Color::Cyan,
            Status::Expired => Color::Yellow,
            Status::Throttled => Color::Magenta,
            Status::Dead | Status::Auth | Status::Error => Color::Red,
            Status::New | Status::Closed => Color::DarkGray,
        };
        self.fg(color)
    }

    fn dim(&self) -> Style {
        self.fg(Color::DarkGray)
    }

    fn key(&self) -> Style {
        self.fg(Color::Cyan).add_modifier(Modifier::BOLD)
    }

    fn selected(&self) -> Style {
        if self.color {
            Style::new().bg(Color::Blue).fg(Color::White)
        } else {
            Style::new().add_modifier(Modifier::REVERSED)
        }
    }
}

pub fn draw(frame: &mut Frame, app: &mut App, now: DateTime<Utc>) {
    let area = frame.area();
    let theme = Theme { color: !app.info.no_color };
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
        let text = format!("terminal too small: {}x{}, need {MIN_WIDTH}x{MIN_HEIGHT}", area.width, area.height);
        frame.render_widget(Paragraph::new(text).wrap(Wrap { trim: true }).alignment(Alignment::Center), area);
        return;
    }
    let detail_height = if app.details { (area.height / 2).clamp(8, 16) } else { 0 };
    let [header, table, detail, footer] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Min(3),
        Constraint::Length(detail_height),
        Constraint::Length(1),
    ])
    .areas(area);
    draw_header(frame, app, header, &theme, now);
    draw_table(frame, app, table, &theme, now);
    if app.details {
        draw_details(frame, app, detail, &theme, now);
    }
    draw_footer(frame, app, footer, &theme);
    app.drawn_clock_text = app.clock_text(now);
    if app.help {
        draw_help(frame, area, &theme);
    }
    if app.dialog.is_some() {
        draw_dialog(frame, app, area, &theme, now);
    }
}

fn draw_header(frame: &mut Frame, app: &App, area: Rect, theme: &Theme, now: DateTime<Utc>) {
    let mut first = vec![Span::styled("wbsessions ", Style::new().add_modifier(Modifier::BOLD))];
    if app.info.demo {
        let badge = if theme.color {
            Style::new().bg(Color::Yellow).fg(Color::Black)
        } else {
            Style::new().add_modifier(Modifier::REVERSED)
        };
        first.push(Span::styled(" DEMO ", badge));
        first.push(Span::raw(" "));
    }
    match app.info.driver {
        Driver::This => first.push(Span::raw("driver")),
        Driver::Other(pid) => first.push(Span::styled(
            format!("watching, pid {} drives", pid.map_or("?".to_string(), |p| p.to_string())),
            theme.fg(Color::Yellow),
        )),
    }
    first.push(Span::styled(" · ", theme.dim()));
    if app.info.driver != Driver::This {
        first.push(Span::styled("auto by driver", theme.dim()));
    } else if app.paused {
        first.push(Span::styled("auto paused", theme.fg(Color::Yellow)));
    } else {
        first.push(Span::raw("auto on"));
    }
    first.push(Span::styled(" · sign-in ", theme.dim()));
    first.push(Span::raw(app.info.signin.clone()));
    first.push(Span::styled(" · graph ", theme.dim()));
    first.push(Span::raw(app.info.endpoint.clone()));
    first.push(Span::styled(" · store ", theme.dim()));
    first.push(Span::raw(app.info.store.clone()));

    let mut second = vec![Span::raw(format!("{} sessions:", app.rows.len()))];
    for (&status, count) in app.counts() {
        second.push(Span::raw(" "));
        second.push(Span::styled(format!("{count} {status}"), theme.status(status)));
    }
    if let Some(until) = app.throttled_until.filter(|t| *t > now) {
        second.push(Span::styled(
            format!("  · throttled, resuming {}", format_until(until, now)),
            theme.status(Status::Throttled),
        ));
    }
    frame.render_widget(Paragraph::new(vec![Line::from(first), Line::from(second)]), area);
}

struct Column {
    title: &'static str,
    width: Constraint,
    /// Kept on terminals narrower than `WIDE`.
    narrow: bool,
}

const WIDE: u16 = 100;

const COLUMNS: [Column; 9] = [
    Column { title: "", width: Constraint::Length(1), narrow: true },
    Column { title: "NAME", width: Constraint::Fill(2), narrow: true },
    Column { title: "WORKBOOK", width: Constraint::Fill(3), narrow: true },
    Column { title: "MODE", width: Constraint::Length(7), narrow: false },
    Column { title: "STATUS", width: Constraint::Length(10), narrow: true },
    Column { title: "LAST REFRESH", width: Constraint::Length(12), narrow: true },
    Column { title: "NEXT", width: Constraint::Length(8), narrow: true },
    Column { title: "LATENCY", width: Constraint::Length(8), narrow: false },
    Column { title: "FAILS", width: Constraint::Length(5), narrow: false },
];

fn draw_table(frame: &mut Frame, app: &mut App, area: Rect, theme: &Theme, now: DateTime<Utc>) {
    let mut title = format!(" sessions · sort: {} ", app.sort.label());
    if app.failing_only {
        title.push_str("· failing only ");
    }
    if app.filtering || !app.filter.is_empty() {
        title.push_str(&format!("· filter: {}{} ", app.filter, if app.filtering { "▏" } else { "" }));
    }
    let block = Block::new().borders(Borders::TOP).title(title).border_style(theme.dim());
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let rows_area = Rect { y: inner.y + 1, height: inner.height.saturating_sub(1), ..inner };
    app.table_rows = rows_area;
    let height = rows_area.height as usize;
    app.scroll_to_selection(height);
    let offset = app.offset;
    let selected = app.selected;
    let visible: Vec<i64> = app.view().iter().skip(offset).take(height).copied().collect();
    let wide = area.width >= WIDE;
    if visible.is_empty() {
        let text = if app.rows.is_empty() {
            "no sessions yet: n creates one, i tracks an existing id"
        } else {
            "no session matches"
        };
        frame.render_widget(Paragraph::new(text).style(theme.dim()).alignment(Alignment::Center), rows_area);
    }
    let rows: Vec<TableRow> = visible
        .iter()
        .filter_map(|key| app.rows.get(key))
        .map(|row| {
            let s = &row.session;
            let status = if row.refreshing { Status::Refreshing } else { s.status };
            let mark = if app.marks.contains(&s.key) { "●" } else { " " };
            let last = s.last_refresh.map_or("never".to_string(), |t| format_ago(t, now));
            let next = if row.refreshing {
                "now".to_string()
            } else {
                app.next_due(s).map_or("-".to_string(), |due| format_until(due, now))
            };
            let latency = s.outcomes.first().map_or("-".to_string(), |o| format!("{}ms", o.latency_ms));
            let style = if Some(s.key) == selected { theme.selected() } else { Style::new() };
            let cells = vec![
                Cell::from(mark),
                Cell::from(s.name.clone()),
                Cell::from(s.workbook.to_string()),
                Cell::from(if s.mode == crate::session::Mode::Persistent { "persist" } else { "scratch" }),
                Cell::from(Span::styled(
                    status.as_str(),
                    if Some(s.key) == selected { Style::new() } else { theme.status(status) },
                )),
                Cell::from(last),
                Cell::from(if s.auto { next } else { "manual".into() }),
                Cell::from(latency),
                Cell::from(s.failures.to_string()),
            ];
            TableRow::new(cells.into_iter().zip(COLUMNS).filter(|(_, c)| wide || c.narrow).map(|(cell, _)| cell))
                .style(style)
        })
        .collect();
    let header = TableRow::new(COLUMNS.iter().filter(|c| wide || c.narrow).map(|c| c.title))
        .style(Style::new().add_modifier(Modifier::BOLD));
    let widths: Vec<Constraint> = COLUMNS.iter().filter(|c| wide || c.narrow).map(|c| c.width).collect();
    frame.render_widget(Table::new(rows, widths).header(header).column_spacing(1), inner);
}

fn draw_details(frame: &mut Frame, app: &App, area: Rect, theme: &Theme, now: DateTime<Utc>) {
    let block = Block::new().borders(Borders::TOP).title(" details ").border_style(theme.dim());
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let Some(row) = app.selected_row() else { return };
    let s = &row.session;
    let [text_area, spark_area] = Layout::horizontal([Constraint::Fill(3), Constraint::Fill(1)]).areas(inner);
    let url = format!("{}/{}/workbook", app.info.endpoint.trim_end_matches('/'), s.workbook.segments().join("/"));
    let mut lines = vec![
        Line::from(vec![Span::styled("workbook   ", theme.dim()), Span::raw(url)]),
        Line::from(vec![
            Span::styled("interval   ", theme.dim()),
            Span::raw(format!(
                "{}{} · {} · {}",
                format_duration(app.interval_of(s)),
                if s.interval.is_none() { " (default)" } else { "" },
                if s.auto { "automatic" } else { "manual" },
                if s.recreate { "recreated on expiry" } else { "not recreated" }
            )),
        ]),
        Line::from(vec![Span::styled("session id ", theme.dim()), Span::raw(s.session_id.to_string())]),
    ];
    for o in &s.outcomes {
        let mut spans = vec![
            Span::styled(format!("{:>9} ", format_ago(o.at, now)), theme.dim()),
            Span::raw(format!("{:7} ", o.action.as_str())),
            Span::styled(format!("{:9}", o.kind.as_str()), theme.status(o.kind.into())),
            Span::raw(format!(" {:>3} {:>5}ms", o.http_status.map_or("-".into(), |c| c.to_string()), o.latency_ms)),
        ];
        if !o.codes.is_empty() {
            spans.push(Span::raw(format!(" {}", o.codes.join("/"))));
        }
        if let Some(id) = &o.request_id {
            spans.push(Span::styled(format!(" request-id {id}"), theme.dim()));
        }
        if let Some(message) = &o.message {
            spans.push(Span::raw(format!(" {message}")));
        }
        lines.push(Line::from(spans));
    }
    // The session id is long: it wraps, and the outcomes follow it.
    frame.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }), text_area);
    // Refreshes only: a create with its operation polling would dwarf them.
    let latencies: Vec<u64> = s
        .outcomes
        .iter()
        .rev()
        .filter(|o| o.action == crate::session::Action::Refresh)
        .map(|o| o.latency_ms.max(1))
        .collect();
    let spark_block = Block::new().borders(Borders::LEFT).title("latency").border_style(theme.dim());
    frame.render_widget(
        Sparkline::default().block(spark_block).data(&latencies).style(theme.fg(Color::Cyan)),
        spark_area,
    );
}

fn draw_footer(frame: &mut Frame, app: &App, area: Rect, theme: &Theme) {
    if let Some(flash) = &app.flash {
        let style =
            if flash.error { theme.fg(Color::Red).add_modifier(Modifier::BOLD) } else { theme.fg(Color::Green) };
        let suffix = if flash.error { "  (esc dismisses)" } else { "" };
        frame.render_widget(
            Paragraph::new(Line::from(vec![Span::styled(format!("{}{suffix}", flash.text), style)])),
            area,
        );
        return;
    }
    if app.filtering {
        frame.render_widget(Paragraph::new("filter: type to narrow, enter keeps it, esc clears it"), area);
        return;
    }
    // As many hints as fit, in keymap order; the last two (help, quit) always.
    let hints: Vec<(&str, &str)> = footer_hints().collect();
    let width = |(label, hint): &(&str, &str)| label.chars().count() + hint.chars().count() + 3;
    let (body, tail) = hints.split_at(hints.len().saturating_sub(2));
    let mut room = (area.width as usize).saturating_sub(tail.iter().map(width).sum());
    let mut shown: Vec<&(&str, &str)> = Vec::new();
    for hint in body {
        if width(hint) > room {
            break;
        }
        room -= width(hint);
        shown.push(hint);
    }
    shown.extend(tail);
    let mut spans = Vec::new();
    for (label, hint) in shown {
        spans.push(Span::styled(*label, theme.key()));
        spans.push(Span::raw(format!(" {hint}  ")));
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn centered(area: Rect, width: u16, height: u16) -> Rect {
    let width = width.min(area.width);
    let height = height.min(area.height);
    Rect { x: area.x + (area.width - width) / 2, y: area.y + (area.height - height) / 2, width, height }
}

fn draw_help(frame: &mut Frame, area: Rect, theme: &Theme) {
    let mut lines: Vec<Line> = KEYMAP
        .iter()
        .map(|b| Line::from(vec![Span::styled(format!("{:>8}  ", b.label), theme.key()), Span::raw(b.help)]))
        .collect();
    lines.push(Line::from(""));
    lines.push(Line::from(Span::styled("   mouse  click selects, the wheel scrolls; esc dismisses", theme.dim())));
    let popup = centered(area, 64, lines.len() as u16 + 2);
    frame.render_widget(Clear, popup);
    frame.render_widget(Paragraph::new(lines).block(Block::bordered().title(" keys (any key closes) ")), popup);
}

fn draw_dialog(frame: &mut Frame, app: &App, area: Rect, theme: &Theme, now: DateTime<Utc>) {
    let Some(dialog) = &app.dialog else { return };
    match dialog {
        Dialog::SignIn(sign_in) => {
            let mut lines = Vec::new();
            match &sign_in.code {
                None => lines.push(Line::from("asking the sign-in service for a code…")),
                Some((uri, code)) => {
                    lines.push(Line::from(vec![Span::raw("open  "), Span::styled(uri.clone(), theme.key())]));
                    lines.push(Line::from(vec![
                        Span::raw("enter "),
                        Span::styled(code.clone(), Style::new().add_modifier(Modifier::BOLD | Modifier::REVERSED)),
                    ]));
                    if let Some(deadline) = sign_in.deadline {
                        let left = (deadline - now).num_seconds().max(0);
                        lines.push(Line::from(Span::styled(
                            format!("waiting for the sign-in: {}:{:02} left", left / 60, left % 60),
                            theme.dim(),
                        )));
                    }
                }
            }
            lines.push(Line::from(""));
            match &sign_in.error {
                Some(e) => {
                    lines.push(Line::from(Span::styled(e.clone(), theme.fg(Color::Red).add_modifier(Modifier::BOLD))))
                }
                None => lines.push(Line::from(Span::styled("esc cancels", theme.dim()))),
            }
            let popup = centered(area, 72, lines.len() as u16 + 2);
            frame.render_widget(Clear, popup);
            frame.render_widget(
                Paragraph::new(lines).wrap(Wrap { trim: true }).block(Block::bordered().title(" Sign in ")),
                popup,
            );
        }
        Dialog::Confirm { what, names, .. } => {
            let (verb, note) = match what {
                Confirm::Close => ("Close", "The session ends at Graph; it stays in the list as closed."),
                Confirm::Remove => ("Remove", "Only stops tracking; the session stays open at Graph."),
            };
            let lines = vec![
                Line::from(format!("{verb} {}?", names.join(", "))),
                Line::from(Span::styled(note, theme.dim())),
                Line::from(""),
                Line::from(vec![
                    Span::styled("y", theme.key()),
                    Span::raw(" yes   "),
                    Span::styled("n", theme.key()),
                    Span::raw(" no"),
                ]),
            ];
            let popup = centered(area, 64, 6);
            frame.render_widget(Clear, popup);
            frame.render_widget(
                Paragraph::new(lines).wrap(Wrap { trim: true }).block(Block::bordered().title(format!(" {verb} "))),
                popup,
            );
        }
        Dialog::Form(form) => {
            let mut lines = Vec::new();
            for (i, field) in form.fields.iter().enumerate() {
                let focused = i == form.focus;
                let cursor = if focused && !field.toggle { "▏" } else { "" };
                let label_style = if focused { theme.key() } else { theme.dim() };
                lines.push(Line::from(vec![
                    Span::styled(format!("{:>15}  ", field.label), label_style),
                    Span::raw(format!("{}{cursor}", field.value)),
                ]));
                if focused {
                    lines.push(Line::from(Span::styled(format!("{:>17}{}", "", field.hint), theme.dim())));
                }
            }
            lines.push(Line::from(""));
            match &form.error {
                Some(error) => lines
                    .push(Line::from(Span::styled(error.clone(), theme.fg(Color::Red).add_modifier(Modifier::BOLD)))),
                None => lines.push(Line::from(Span::styled("tab next field · enter save · esc cancel", theme.dim()))),
            }
            let popup = centered(area, 76, lines.len() as u16 + 4);
            frame.render_widget(Clear, popup);
            frame.render_widget(
                Paragraph::new(lines)
                    .wrap(Wrap { trim: false })
                    .block(Block::bordered().title(format!(" {} ", form.title()))),
                popup,
            );
        }
    }
}
