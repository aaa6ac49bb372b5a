//! Drawing: a pure function of the app's state and the time. It reads the rows, columns and
//! areas `update` chose; it changes nothing.

use chrono::{DateTime, Utc};
use ratatui::Frame;
use ratatui::layout::{Alignment, Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph, Sparkline, Wrap};

use super::app::{App, Driver, Overlay, Row, RowTimes};
use super::dialog::{Confirm, Dialog, FieldValue};
use super::keymap::{KEYMAP, OTHER_KEYS, footer_hints};
use super::layout::{Col, MIN_HEIGHT, MIN_WIDTH, keep_end, keep_start, wrap};
use super::theme::Palette;
use crate::auth::SignInState;
use crate::session::{Action as CallAction, Mode, Status};
use crate::time::{format_ago, format_duration, format_until};

pub fn draw(frame: &mut Frame, app: &App, now: DateTime<Utc>) {
    let areas = app.layout;
    let theme = &app.info.palette;
    if areas.too_small {
        let text = format!(
            "terminal too small: {}x{}, need {MIN_WIDTH}x{MIN_HEIGHT}",
            areas.screen.width, areas.screen.height
        );
        frame.render_widget(Paragraph::new(text).wrap(Wrap { trim: true }).alignment(Alignment::Center), areas.screen);
        return;
    }
    draw_header(frame, app, areas.header, theme, now);
    draw_table(frame, app, theme, now);
    if app.details {
        draw_details(frame, app, areas.detail, theme, now);
    }
    draw_footer(frame, app, areas.footer, theme);
    match app.overlay {
        Some(Overlay::Help { scroll }) => draw_help(frame, areas.screen, app, scroll),
        Some(Overlay::Log { scroll }) => draw_log(frame, areas.screen, theme, app, scroll),
        None => {}
    }
    if app.dialog.is_some() {
        draw_dialog(frame, app, areas.screen, theme, now);
    }
}

fn signin_label(app: &App) -> String {
    if app.info.demo {
        return "simulated".into();
    }
    match &app.signin {
        None => "…".into(),
        Some(SignInState::Source(source)) => (*source).into(),
        Some(SignInState::SignedIn { user, until }) => format!(
            "{} · token until {}",
            user.as_deref().unwrap_or("signed in"),
            until.with_timezone(&chrono::Local).format("%H:%M")
        ),
        Some(SignInState::Ended) => "ended: l signs in again".into(),
        Some(SignInState::NotSignedIn) => "not signed in: l signs in".into(),
        Some(SignInState::Unusable(_)) => "token cache unusable: run wbsessions whoami".into(),
    }
}

fn width_of(spans: &[Span]) -> usize {
    spans.iter().map(|s| s.content.chars().count()).sum()
}

fn draw_header(frame: &mut Frame, app: &App, area: Rect, theme: &Palette, now: DateTime<Utc>) {
    let mut first = vec![Span::styled("wbsessions ", Style::new().add_modifier(Modifier::BOLD))];
    if app.info.demo {
        first.push(Span::styled(" DEMO ", theme.badge()));
        first.push(Span::raw(" "));
    }
    match app.info.driver {
        Driver::This => first.push(Span::raw("driver")),
        Driver::Other(pid) => first.push(Span::styled(
            format!("watching, pid {} drives", pid.map_or("?".to_string(), |p| p.to_string())),
            theme.warning(),
        )),
        Driver::ReadOnly => first.push(Span::styled("read-only store: watching", theme.warning())),
    }
    if !app.keepers.is_empty() {
        first.push(Span::styled(" · keepers (workbooks) ", theme.chrome()));
        let each: Vec<String> = app
            .keepers
            .iter()
            .map(|k| {
                let pid = k.pid.map_or_else(String::new, |p| format!(":{p}"));
                let workbooks = k.workbooks.map_or_else(String::new, |w| format!(" {w}"));
                format!("{}{pid}{workbooks}", crate::text::clean(&k.host, 40))
            })
            .collect();
        first.push(Span::raw(each.join(", ")));
    }
    first.push(Span::styled(" · ", theme.chrome()));
    if app.paused {
        first.push(Span::styled("auto paused", theme.warning()));
    } else {
        first.push(Span::raw("auto on"));
    }
    first.push(Span::styled(" · sign-in ", theme.chrome()));
    first.push(Span::raw(signin_label(app)));
    // What does not fit goes, least useful first: the endpoint, then the start of the store path
    // (its file name is the informative end).
    let width = usize::from(area.width);
    let graph = [Span::styled(" · graph ", theme.chrome()), Span::raw(app.info.endpoint.clone())];
    let store_label = Span::styled(" · store ", theme.chrome());
    let fixed = width_of(&first) + store_label.content.chars().count();
    if fixed + width_of(&graph) + app.info.store.chars().count() <= width {
        first.extend(graph);
    }
    let room = width.saturating_sub(width_of(&first) + store_label.content.chars().count());
    if room >= 8 {
        first.push(store_label);
        first.push(Span::raw(keep_end(&app.info.store, room)));
    }

    let mut second = vec![Span::raw(if app.loading {
        format!("{} so far, reading the rest:", crate::text::count(app.rows.len(), "session"))
    } else {
        format!("{}:", crate::text::count(app.rows.len(), "session"))
    })];
    if app.signed_out() {
        second = vec![Span::styled("signed out: press l or run wbsessions login", theme.error()), Span::raw(" ·")];
    }
    // Work under way comes first: the counts after it may be cut on a narrow screen.
    for bulk in app.bulks.iter().rev() {
        second.insert(0, Span::raw(" · "));
        second.insert(0, Span::styled(bulk.progress(), theme.status(Status::Refreshing)));
    }
    for (&status, count) in app.counts() {
        second.push(Span::raw(" "));
        second.push(Span::styled(format!("{count} {status}"), theme.status(status)));
    }
    if let Some(proxy) = &app.proxy {
        let (calls, errors) = (proxy.last_minute)();
        let style = if errors > 0 { theme.warning() } else { theme.chrome() };
        second.push(Span::styled(format!("  · PROXY {calls} calls a minute, {errors} errors"), style));
    }
    if let (workbooks, Some(until)) = app.holds
        && until > now
    {
        second.push(Span::styled(
            format!("  · throttled: {workbooks} held back, resuming {}", format_until(until, now)),
            theme.status(Status::Throttled),
        ));
    }
    if app.absolute_times {
        second.push(Span::styled(
            format!("  · times local ({})", now.with_timezone(&chrono::Local).format("%Z")),
            theme.chrome(),
        ));
    }
    frame.render_widget(Paragraph::new(vec![Line::from(first), Line::from(second)]), area);
}

fn cell(
    app: &App,
    row: &Row,
    col: Col,
    width: usize,
    theme: &Palette,
    times: &RowTimes,
    now: DateTime<Utc>,
) -> Span<'static> {
    let s = &row.session;
    let plain = |text: String| Span::raw(text);
    match col {
        Col::Mark => plain(if app.marks.contains(&s.key) { "●" } else { " " }.into()),
        Col::Name => plain(keep_start(&s.name, width)),
        Col::Workbook => plain(keep_end(&s.workbook.to_string(), width)),
        Col::Owner => plain(keep_start(s.owner.as_deref().unwrap_or("-"), width)),
        Col::Mode => plain(if s.mode == Mode::Persistent { "persist" } else { "scratch" }.into()),
        Col::Status => {
            let status = app.status_of(row);
            Span::styled(status.as_str(), theme.status(status))
        }
        Col::Last => plain(keep_start(&times.last, width)),
        Col::Next => plain(keep_start(&times.next, width)),
        Col::Expires => {
            let left = app.info.defaults.expires_at(s).map(|at| at.signed_duration_since(now));
            Span::styled(keep_start(&times.expires, width), theme.expiry(left))
        }
        Col::Latency => plain(s.last_call.map_or("-".to_string(), |c| format!("{}ms", c.latency_ms))),
        Col::Failures => plain(s.failures.to_string()),
    }
}

/// One line of the table: each column's text padded to its width.
fn table_line(cells: Vec<(Span<'static>, u16)>, style: Style) -> Line<'static> {
    let mut spans = Vec::new();
    let count = cells.len();
    for (i, (span, width)) in cells.into_iter().enumerate() {
        let text: String = span.content.chars().take(usize::from(width)).collect();
        let pad = usize::from(width).saturating_sub(text.chars().count());
        spans.push(Span::styled(text, span.style));
        let gap = if i + 1 < count { pad + super::layout::SPACING as usize } else { pad };
        spans.push(Span::raw(" ".repeat(gap)));
    }
    Line::from(spans).style(style)
}

fn draw_table(frame: &mut Frame, app: &App, theme: &Palette, now: DateTime<Utc>) {
    let area = app.layout.table;
    let arrow = if app.sort.reverse { "▼" } else { "▲" };
    let mut title =
        format!(" sessions · sort: {}{} ", app.sort.by.label(), if app.sort.reverse { ", reversed" } else { "" });
    if app.failing_only {
        title.push_str("· failing only ");
    }
    if app.filtering || !app.filter.is_empty() {
        title.push_str(&format!("· filter: {}{} ", app.filter, if app.filtering { "▏" } else { "" }));
    }
    if app.failing_only || !app.filter.is_empty() {
        let (shown, all) = (crate::text::thousands(app.view().len()), crate::text::thousands(app.rows.len()));
        title.push_str(&format!("· {shown} of {all} ",));
    }
    frame.render_widget(Block::new().borders(Borders::TOP).title(title).border_style(theme.chrome()), area);
    let sorted = super::app::column_of(app.sort.by);
    let header: Vec<(Span<'static>, u16)> = app
        .columns
        .iter()
        .map(|p| {
            let title = if p.col == sorted { format!("{}{arrow}", p.col.title()) } else { p.col.title().to_string() };
            (Span::raw(title), p.width)
        })
        .collect();
    frame.render_widget(
        Paragraph::new(table_line(header, Style::new().add_modifier(Modifier::BOLD))),
        app.layout.table_header,
    );
    let rows_area = app.layout.table_rows;
    if app.visible.is_empty() {
        let text = if app.rows.is_empty() {
            "no sessions yet: n creates one, i tracks an existing id"
        } else {
            "no session matches"
        };
        frame.render_widget(Paragraph::new(text).style(theme.chrome()).alignment(Alignment::Center), rows_area);
        return;
    }
    let lines: Vec<Line> = app
        .visible
        .iter()
        .filter_map(|key| app.rows.get(key))
        .map(|row| {
            let selected = Some(row.session.key) == app.selected;
            let times = app.row_times(row, now);
            let cells = app
                .columns
                .iter()
                .map(|p| {
                    let mut span = cell(app, row, p.col, usize::from(p.width), theme, &times, now);
                    if selected {
                        span.style = Style::new();
                    }
                    (span, p.width)
                })
                .collect();
            table_line(cells, if selected { theme.selected() } else { Style::new() })
        })
        .collect();
    frame.render_widget(Paragraph::new(lines), rows_area);
}

fn draw_details(frame: &mut Frame, app: &App, area: Rect, theme: &Palette, now: DateTime<Utc>) {
    let title =
        if app.details_focus { " details (focused: j/k scroll, tab back) " } else { " details (tab to scroll) " };
    let border = if app.details_focus { theme.key() } else { theme.chrome() };
    let block = Block::new().borders(Borders::TOP).title(title).border_style(border);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let Some(row) = app.selected_row() else { return };
    let s = &row.session;
    let [text_area, spark_area] = Layout::horizontal([Constraint::Fill(3), Constraint::Length(24)]).areas(inner);
    let expires = app.info.defaults.expires_at(s).map_or("unknown".to_string(), |at| {
        if at <= now { "passed: likely expired".to_string() } else { format_until(at, now) }
    });
    let mut lines = vec![
        Line::from(vec![Span::styled("session id ", theme.chrome()), Span::raw(s.session_id.to_string())]),
        Line::from(vec![Span::styled("workbook   ", theme.chrome()), Span::raw(s.workbook.url(&app.info.endpoint))]),
        Line::from(vec![
            Span::styled("keeping    ", theme.chrome()),
            Span::raw(format!(
                "every {}{} · {} · {} · expires {expires}",
                format_duration(app.info.defaults.interval_of(s)),
                if s.interval.is_none() { " (default)" } else { "" },
                if s.auto { "automatic" } else { "manual" },
                if s.recreate { "recreated on expiry" } else { "not recreated" }
            )),
        ]),
    ];
    if let Some(owner) = &s.owner {
        lines.insert(2, Line::from(vec![Span::styled("owner      ", theme.chrome()), Span::raw(owner.clone())]));
    }
    let history = app.history.as_ref().filter(|(k, _)| *k == s.key).map(|(_, h)| h.as_slice());
    match history {
        None => lines.push(Line::from(Span::styled("reading the history…", theme.chrome()))),
        Some([]) => lines.push(Line::from(Span::styled("no calls yet", theme.chrome()))),
        Some(outcomes) => {
            for o in outcomes {
                let when = if app.absolute_times {
                    o.at.with_timezone(&chrono::Local).format("%H:%M:%S").to_string()
                } else {
                    format_ago(o.at, now)
                };
                let mut spans = vec![
                    Span::styled(format!("{when:>9} "), theme.chrome()),
                    Span::raw(format!("{:7} ", o.action.as_str())),
                    Span::styled(format!("{:9}", o.kind.as_str()), theme.status(o.kind.into())),
                    Span::raw(format!(
                        " {:>3} {:>5}ms",
                        o.http_status.map_or("-".into(), |c| c.to_string()),
                        o.latency_ms
                    )),
                ];
                if !o.codes.is_empty() {
                    spans.push(Span::raw(format!(" {}", o.codes.join("/"))));
                }
                if let Some(id) = &o.request_id {
                    spans.push(Span::styled(format!(" request-id {id}"), theme.chrome()));
                }
                if let Some(message) = &o.message {
                    spans.push(Span::raw(format!(" {message}")));
                }
                lines.push(Line::from(spans));
            }
        }
    }
    let scroll = u16::try_from(app.detail_scroll).unwrap_or(u16::MAX);
    frame.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }).scroll((scroll, 0)), text_area);
    draw_latency(frame, history.unwrap_or_default(), spark_area, theme);
}

/// The refreshes' latencies on the session's own scale, with their range in the title: equal
/// latencies draw a flat line, not full bars.
fn draw_latency(frame: &mut Frame, history: &[crate::session::Outcome], area: Rect, theme: &Palette) {
    // Refreshes only: a create with its operation polling would dwarf them.
    let latencies: Vec<u64> =
        history.iter().rev().filter(|o| o.action == CallAction::Refresh).map(|o| o.latency_ms).collect();
    let (min, max) = (latencies.iter().min().copied().unwrap_or(0), latencies.iter().max().copied().unwrap_or(0));
    let title = if latencies.is_empty() { "latency".to_string() } else { format!("latency {min}–{max} ms") };
    let block = Block::new().borders(Borders::LEFT).title(title).border_style(theme.chrome());
    let range = max - min;
    // The lowest shows as the smallest bar, the highest as a full one.
    let data: Vec<u64> = latencies.iter().map(|l| 1 + (l - min) * 7 / range.max(1)).collect();
    frame.render_widget(Sparkline::default().block(block).data(&data).max(8).style(theme.accent()), area);
}

fn draw_footer(frame: &mut Frame, app: &App, area: Rect, theme: &Palette) {
    let width = usize::from(area.width);
    if let Some(flash) = &app.flash {
        let style = if flash.error { theme.error() } else { theme.info() };
        let suffix = if flash.error { "  (esc dismisses, L shows the log)" } else { "" };
        let text = keep_start(&flash.text, width.saturating_sub(suffix.chars().count()));
        frame.render_widget(Paragraph::new(Line::from(vec![Span::styled(format!("{text}{suffix}"), style)])), area);
        return;
    }
    if app.filtering {
        frame.render_widget(Paragraph::new("filter: type to narrow, enter keeps it, esc clears it"), area);
        return;
    }
    // As many hints as fit, in keymap order; the last two (help, quit) always.
    let hints: Vec<(&str, &str)> = footer_hints().collect();
    let width_of = |(label, hint): &(&str, &str)| label.chars().count() + hint.chars().count() + 3;
    let (body, tail) = hints.split_at(hints.len().saturating_sub(2));
    let mut spans = Vec::new();
    if !app.marks.is_empty() {
        let shown: std::collections::HashSet<_> = app.view().iter().collect();
        let hidden = app.marks.iter().filter(|k| !shown.contains(k)).count();
        let mut text = format!("{} marked", crate::text::thousands(app.marks.len()));
        if hidden > 0 {
            text.push_str(&format!(" ({} hidden)", crate::text::thousands(hidden)));
        }
        spans.push(Span::styled(text, theme.warning()));
        spans.push(Span::raw("  "));
    }
    let mut room = width.saturating_sub(
        tail.iter().map(width_of).sum::<usize>() + spans.iter().map(|s| s.content.chars().count()).sum::<usize>(),
    );
    let mut shown: Vec<&(&str, &str)> = Vec::new();
    for hint in body {
        if width_of(hint) > room {
            break;
        }
        room -= width_of(hint);
        shown.push(hint);
    }
    shown.extend(tail);
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

/// A scrolled overlay box as large as it may be; the scroll is clamped to its content.
fn overlay(frame: &mut Frame, area: Rect, title: String, lines: Vec<Line<'static>>, scroll: usize, width: u16) {
    let height = (lines.len() as u16 + 2).min(area.height);
    let room = usize::from(height.saturating_sub(2));
    let scroll = scroll.min(lines.len().saturating_sub(room));
    let more = if scroll + room < lines.len() { " · j/k, pgdn for more " } else { "" };
    let popup = centered(area, width, height);
    frame.render_widget(Clear, popup);
    let visible: Vec<Line> = lines.into_iter().skip(scroll).take(room).collect();
    frame.render_widget(Paragraph::new(visible).block(Block::bordered().title(format!("{title}{more}"))), popup);
}

/// Every key (from the keymap), esc and the mouse, and what each status means.
pub fn help_lines(app: &App) -> Vec<Line<'static>> {
    let theme = &app.info.palette;
    let mut lines: Vec<Line> = KEYMAP
        .iter()
        .map(|b| Line::from(vec![Span::styled(format!("{:>8}  ", b.label), theme.key()), Span::raw(b.help)]))
        .collect();
    for (key, help) in OTHER_KEYS {
        lines.push(Line::from(vec![Span::styled(format!("{key:>8}  "), theme.key()), Span::raw(*help)]));
    }
    lines.push(Line::from(""));
    lines.push(Line::from(Span::styled("statuses", Style::new().add_modifier(Modifier::BOLD))));
    for status in Status::ALL {
        lines.push(Line::from(vec![
            Span::styled(format!("{:>10}  ", status.as_str()), theme.status(status)),
            Span::raw(status.meaning()),
        ]));
    }
    lines.push(Line::from(""));
    lines.push(Line::from(vec![Span::styled("     log  ", theme.chrome()), Span::raw(app.info.log_dir.clone())]));
    lines
}

fn draw_help(frame: &mut Frame, area: Rect, app: &App, scroll: usize) {
    let lines = help_lines(app);
    overlay(frame, area, " keys (esc closes) ".into(), lines, scroll, 86);
}

fn draw_log(frame: &mut Frame, area: Rect, theme: &Palette, app: &App, scroll: usize) {
    let width = area.width.min(120);
    let inner = usize::from(width.saturating_sub(2));
    // The folder is the one thing here worth copying: wrapped, never cut.
    let mut lines: Vec<Line> = wrap(&app.info.log_dir, inner.saturating_sub(11))
        .into_iter()
        .enumerate()
        .map(|(i, part)| {
            Line::from(vec![
                Span::styled(if i == 0 { "log files  " } else { "           " }, theme.chrome()),
                Span::raw(part),
            ])
        })
        .collect();
    let entries = app.log_lines();
    if app.problems.is_none() {
        lines.push(Line::from(Span::styled("reading the store's recent failures…", theme.chrome())));
    } else if entries.is_empty() {
        lines.push(Line::from(Span::styled(
            "no warnings or errors: none in the store's recent calls, none since the dashboard opened",
            theme.chrome(),
        )));
    }
    for entry in entries {
        let when = entry.at.with_timezone(&chrono::Local).format("%H:%M:%S").to_string();
        let style = if entry.error { theme.error() } else { theme.warning() };
        for (i, part) in wrap(&entry.text, inner.saturating_sub(10)).into_iter().enumerate() {
            let stamp = if i == 0 { format!("{when}  ") } else { " ".repeat(10) };
            lines.push(Line::from(vec![Span::styled(stamp, theme.chrome()), Span::styled(part, style)]));
        }
    }
    overlay(frame, area, " recent warnings and errors (esc closes) ".into(), lines, scroll, width);
}

/// A dialog box as wide as it may be, as tall as its lines; the last lines (actions, errors)
/// are kept when the screen is too short for all.
fn dialog_box(frame: &mut Frame, area: Rect, title: String, mut lines: Vec<Line<'static>>, keep_last: usize) {
    let height = (lines.len() as u16 + 2).min(area.height);
    let room = usize::from(height.saturating_sub(2));
    if lines.len() > room {
        let tail = lines.split_off(lines.len().saturating_sub(keep_last.min(room)));
        lines.truncate(room.saturating_sub(tail.len()));
        lines.extend(tail);
    }
    let popup = centered(area, dialog_width(area), height);
    frame.render_widget(Clear, popup);
    frame.render_widget(Paragraph::new(lines).block(Block::bordered().title(title)), popup);
}

fn dialog_width(area: Rect) -> u16 {
    area.width.min(76)
}

fn styled_lines(text: &str, width: usize, style: Style) -> Vec<Line<'static>> {
    wrap(text, width).into_iter().map(|l| Line::from(Span::styled(l, style))).collect()
}

fn draw_dialog(frame: &mut Frame, app: &App, area: Rect, theme: &Palette, now: DateTime<Utc>) {
    let Some(dialog) = &app.dialog else { return };
    let inner = usize::from(dialog_width(area).saturating_sub(2));
    match dialog {
        Dialog::SignIn(sign_in) => {
            let mut lines: Vec<Line<'static>> = Vec::new();
            match &sign_in.code {
                None => lines.push(Line::from("asking the sign-in service for a code…")),
                Some((uri, code)) => {
                    lines.push(Line::from(vec![Span::raw("open  "), Span::styled(uri.clone(), theme.key())]));
                    lines.push(Line::from(vec![
                        Span::raw("enter "),
                        Span::styled(code.clone(), Style::new().add_modifier(Modifier::BOLD | Modifier::REVERSED)),
                    ]));
                    if let Some(deadline) = sign_in.deadline {
                        let left = deadline.signed_duration_since(now).num_seconds().max(0);
                        lines.push(Line::from(Span::styled(
                            format!("waiting for the sign-in: {}:{:02} left", left / 60, left % 60),
                            theme.chrome(),
                        )));
                    }
                }
            }
            lines.push(Line::from(""));
            let tail = match &sign_in.error {
                Some(e) => styled_lines(e, inner, theme.error()),
                None => vec![Line::from(Span::styled("esc cancels", theme.chrome()))],
            };
            let keep = tail.len();
            lines.extend(tail);
            dialog_box(frame, area, " Sign in ".into(), lines, keep);
        }
        Dialog::Confirm { what, names, hidden, .. } => {
            let (verb, note) = match what {
                Confirm::Close => ("Close", "The session ends at Graph; it stays in the list as closed."),
                Confirm::Remove { all_closed: true } => ("Remove", "Only stops tracking; it is closed already."),
                Confirm::Remove { all_closed: false } => {
                    ("Remove", "Only stops tracking; the session stays open at Graph until it expires.")
                }
                Confirm::Recreate => {
                    ("Recreate", "A new session on the same workbook replaces the id; the old one is left to expire.")
                }
            };
            let mut lines = wrap(&format!("{verb} {}?", crate::text::names_line(names)), inner)
                .into_iter()
                .map(Line::from)
                .collect::<Vec<_>>();
            if let Some(hidden) = hidden {
                lines.extend(styled_lines(&format!("Marked, not shown: {hidden}."), inner, theme.warning()));
            }
            lines.extend(styled_lines(note, inner, theme.chrome()));
            lines.push(Line::from(""));
            lines.push(Line::from(vec![
                Span::styled("y", theme.key()),
                Span::raw(" yes   "),
                Span::styled("n", theme.key()),
                Span::raw("/"),
                Span::styled("esc", theme.key()),
                Span::raw(" no"),
            ]));
            dialog_box(frame, area, format!(" {verb} "), lines, 1);
        }
        Dialog::Form(form) => {
            let label_width = 17;
            let value_width = inner.saturating_sub(label_width + 1).max(8);
            let mut lines: Vec<Line<'static>> = Vec::new();
            for (i, field) in form.fields.iter().enumerate() {
                let focused = i == form.focus;
                let label_style = if focused { theme.key() } else { theme.chrome() };
                let label = Span::styled(format!("{:>15}  ", field.label), label_style);
                match &field.value {
                    FieldValue::Toggle(on) => {
                        lines.push(Line::from(vec![label, Span::raw(if *on { "yes" } else { "no" })]));
                    }
                    FieldValue::Text(input) => {
                        // One line per field: a long value scrolls so the cursor stays in view.
                        let scroll = input.visual_scroll(value_width.saturating_sub(1));
                        let visible: String = input.value().chars().skip(scroll).take(value_width).collect();
                        let mut spans = vec![label];
                        if focused {
                            let cursor = input.visual_cursor().saturating_sub(scroll);
                            let before: String = visible.chars().take(cursor).collect();
                            let at: String = visible.chars().skip(cursor).take(1).collect();
                            let after: String = visible.chars().skip(cursor + 1).collect();
                            spans.push(Span::raw(before));
                            spans.push(Span::styled(
                                if at.is_empty() { " ".to_string() } else { at },
                                Style::new().add_modifier(Modifier::REVERSED),
                            ));
                            spans.push(Span::raw(after));
                        } else {
                            spans.push(Span::raw(visible));
                        }
                        lines.push(Line::from(spans));
                    }
                }
                let refusal = form.error.as_ref().filter(|e| e.field == Some(field.label));
                if let Some(error) = refusal {
                    // Under the value where there is room for it; at the left edge on a narrow
                    // screen, so that a long refusal stays readable.
                    let (indent, room) =
                        if value_width >= 30 { (" ".repeat(label_width), value_width) } else { (String::new(), inner) };
                    for line in wrap(&error.text, room) {
                        lines.push(Line::from(Span::styled(format!("{indent}{line}"), theme.error())));
                    }
                } else if focused {
                    lines.push(Line::from(Span::styled(format!("{:>17}{}", "", field.hint), theme.chrome())));
                }
            }
            lines.push(Line::from(""));
            let whole = form.error.as_ref().filter(|e| e.field.is_none());
            let tail = match (whole, &form.warning) {
                _ if form.sent => vec![Line::from(Span::styled(
                    format!("{}… (esc closes the form; the answer comes as a message)", form.doing()),
                    theme.chrome(),
                ))],
                (Some(error), _) => styled_lines(&error.text, inner, theme.error()),
                (None, _) if form.error.is_some() => {
                    vec![Line::from(Span::styled("fix the field above · enter save · esc cancel", theme.chrome()))]
                }
                (None, Some(warning)) => {
                    let mut tail = styled_lines(&format!("warning: {warning}"), inner, theme.warning());
                    tail.push(Line::from(Span::styled("enter saves anyway · esc cancels", theme.chrome())));
                    tail
                }
                (None, None) => {
                    vec![Line::from(Span::styled("tab next field · enter save · esc cancel", theme.chrome()))]
                }
            };
            let keep = tail.len();
            lines.extend(tail);
            dialog_box(frame, area, format!(" {} ", form.title()), lines, keep);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::wrap;

    #[test]
    fn wrapping_keeps_every_word() {
        assert_eq!(wrap("no client id: register an app", 12), ["no client", "id: register", "an app"]);
        assert_eq!(wrap("abcdefghij", 4), ["abcd", "efgh", "ij"]);
        assert_eq!(wrap("", 4), [""]);
    }
}
