//! Where each part of the screen goes, and which columns fit: computed by `update` (for the mouse,
//! the scroll offset and the view) and read by the view, so that both agree.

use ratatui::layout::{Constraint, Layout, Rect};

pub(crate) const MIN_WIDTH: u16 = 40;
pub(crate) const MIN_HEIGHT: u16 = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Areas {
    pub(crate) too_small: bool,
    pub screen: Rect,
    pub header: Rect,
    /// The table with its title and column headers.
    pub table: Rect,
    /// The row of column headers.
    pub table_header: Rect,
    /// Where the table's rows are drawn.
    pub table_rows: Rect,
    pub(crate) detail: Rect,
    pub(crate) footer: Rect,
}

pub(crate) fn areas(width: u16, height: u16, details: bool) -> Areas {
    let screen = Rect::new(0, 0, width, height);
    if width < MIN_WIDTH || height < MIN_HEIGHT {
        return Areas { too_small: true, screen, ..Areas::default() };
    }
    let detail_height = if details { (height / 2).clamp(5, 18) } else { 0 };
    let [header, table, detail, footer] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Min(3),
        Constraint::Length(detail_height),
        Constraint::Length(1),
    ])
    .areas(screen);
    // A top border with the title, then the column headers, then the rows.
    let table_header = Rect { y: table.y + 1, height: 1, ..table };
    let table_rows = Rect { y: table.y + 2, height: table.height.saturating_sub(2), ..table };
    Areas { too_small: false, screen, header, table, table_header, table_rows, detail, footer }
}

/// The table's columns, in the order they are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Col {
    Mark,
    Name,
    Workbook,
    /// Shown only where the sessions on screen belong to more than one sign-in.
    Owner,
    Mode,
    Status,
    Last,
    Next,
    Expires,
    Latency,
    Failures,
}

impl Col {
    pub const ALL: [Col; 11] = [
        Col::Mark,
        Col::Name,
        Col::Workbook,
        Col::Owner,
        Col::Mode,
        Col::Status,
        Col::Last,
        Col::Next,
        Col::Expires,
        Col::Latency,
        Col::Failures,
    ];

    pub(crate) fn title(self) -> &'static str {
        match self {
            Col::Mark => "",
            Col::Name => "NAME",
            Col::Workbook => "WORKBOOK",
            Col::Owner => "OWNER",
            Col::Mode => "MODE",
            Col::Status => "STATUS",
            Col::Last => "LAST",
            Col::Next => "NEXT",
            Col::Expires => "EXPIRES",
            Col::Latency => "LATENCY",
            Col::Failures => "FAILS",
        }
    }

    /// The narrowest it may be drawn; flexible columns truncate with `…` down to it.
    fn min(self) -> u16 {
        match self {
            Col::Name => 10,
            Col::Workbook => 12,
            _ => 0,
        }
    }
}

/// Columns dropped first on a narrow terminal, before anything is truncated.
const LOW_VALUE: [Col; 3] = [Col::Mode, Col::Latency, Col::Owner];
/// The workbook gives up its width down to this before the next and failure counts go: its
/// informative end (the item id) still shows.
const WORKBOOK_SOFT_MIN: u16 = 24;
/// Dropped once the workbook is as narrow as it comfortably goes.
const LATER: [Col; 2] = [Col::Failures, Col::Next];
/// Dropped next, once the flexible columns are as narrow as they go.
const THEN: [Col; 3] = [Col::Workbook, Col::Last, Col::Expires];

pub(crate) const SPACING: u16 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placed {
    pub col: Col,
    pub x: u16,
    pub width: u16,
}

/// Fits the columns in `width`: each as wide as its content (`natural`), low-value columns
/// dropped first, then the workbook narrowed to a width that still shows its end, then the next
/// two columns dropped, then the workbook and name truncated, then more columns dropped.
pub(crate) fn fit_columns(width: u16, natural: impl Fn(Col) -> u16) -> Vec<Placed> {
    // A column with nothing to say (no owner to tell apart) takes no room at all.
    let mut cols: Vec<(Col, u16)> =
        Col::ALL.iter().map(|c| (*c, natural(*c))).filter(|(_, w)| *w > 0).map(|(c, w)| (c, w.max(c.min()))).collect();
    let total = |cols: &[(Col, u16)]| -> u16 {
        cols.iter().map(|(_, w)| *w).sum::<u16>() + SPACING * cols.len().saturating_sub(1) as u16
    };
    for col in LOW_VALUE {
        if total(&cols) > width {
            cols.retain(|(c, _)| *c != col);
        }
    }
    let over = total(&cols).saturating_sub(width);
    if let Some((_, w)) = cols.iter_mut().find(|(c, _)| *c == Col::Workbook) {
        *w = w.saturating_sub(over).max(WORKBOOK_SOFT_MIN.min(*w));
    }
    for col in LATER {
        if total(&cols) > width {
            cols.retain(|(c, _)| *c != col);
        }
    }
    for col in [Col::Workbook, Col::Name] {
        let over = total(&cols).saturating_sub(width);
        if let Some((_, w)) = cols.iter_mut().find(|(c, _)| *c == col) {
            *w = w.saturating_sub(over).max(col.min());
        }
    }
    for col in THEN {
        if total(&cols) > width {
            cols.retain(|(c, _)| *c != col);
        }
    }
    // What is left over widens the flexible columns back towards their content, the workbook
    // first, and no further: on a wide terminal the other columns stay next to what they
    // describe instead of being pushed to the far edge.
    for col in [Col::Workbook, Col::Name] {
        let spare = width.saturating_sub(total(&cols));
        let want = natural(col);
        if let Some((_, w)) = cols.iter_mut().find(|(c, _)| *c == col) {
            *w += spare.min(want.saturating_sub(*w));
        }
    }
    let mut x = 0;
    cols.into_iter()
        .map(|(col, width)| {
            let placed = Placed { col, x, width };
            x += width + SPACING;
            placed
        })
        .collect()
}

/// Splits text into lines of at most `width` characters at spaces, so that a dialog can grow to
/// show all of it.
pub(crate) fn wrap(text: &str, width: usize) -> Vec<String> {
    let width = width.max(1);
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split(' ') {
        let mut word = word.to_string();
        while word.chars().count() > width {
            if !line.is_empty() {
                lines.push(std::mem::take(&mut line));
            }
            let head: String = word.chars().take(width).collect();
            word = word.chars().skip(width).collect();
            lines.push(head);
        }
        let needed =
            if line.is_empty() { word.chars().count() } else { line.chars().count() + 1 + word.chars().count() };
        if needed > width && !line.is_empty() {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(&word);
    }
    if !line.is_empty() || lines.is_empty() {
        lines.push(line);
    }
    lines
}

/// The end of `text` in `width` characters, `…` marking what was cut: for workbook references
/// (the item id is the informative part) and paths (the file name is).
pub(crate) fn keep_end(text: &str, width: usize) -> String {
    let count = text.chars().count();
    if count <= width {
        return text.to_string();
    }
    if width == 0 {
        return String::new();
    }
    let tail: String = text.chars().skip(count - (width - 1)).collect();
    format!("…{tail}")
}

/// The start of `text` in `width` characters, `…` marking what was cut.
pub(crate) fn keep_start(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_string();
    }
    if width == 0 {
        return String::new();
    }
    let head: String = text.chars().take(width - 1).collect();
    format!("{head}…")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn natural(col: Col) -> u16 {
        match col {
            Col::Mark => 1,
            Col::Name => 17,
            Col::Workbook => 27,
            Col::Owner => 0,
            Col::Mode => 7,
            Col::Status => 10,
            Col::Last => 8,
            Col::Next => 7,
            Col::Expires => 7,
            Col::Latency => 7,
            Col::Failures => 5,
        }
    }

    fn shown(width: u16) -> Vec<Col> {
        fit_columns(width, natural).iter().map(|p| p.col).collect()
    }

    #[test]
    fn narrow_terminals_drop_low_value_columns_first() {
        assert_eq!(shown(300).len(), 10);
        assert_eq!(shown(120).len(), 10);
        let at_80 = shown(80);
        assert!(!at_80.contains(&Col::Mode) && at_80.contains(&Col::Workbook) && at_80.contains(&Col::Expires));
        assert!(at_80.contains(&Col::Next), "the workbook narrows first: {at_80:?}");
        assert_eq!(shown(60), [Col::Mark, Col::Name, Col::Workbook, Col::Status, Col::Last, Col::Expires]);
        assert_eq!(shown(40), [Col::Mark, Col::Name, Col::Status, Col::Last, Col::Expires]);
        for width in 40..=300 {
            let placed = fit_columns(width, natural);
            let used = placed.last().map_or(0, |p| p.x + p.width);
            assert!(used <= width, "{width}: {placed:?}");
        }
    }

    /// On a wide terminal the workbook is as wide as its text, not as the screen: the columns
    /// after it stay where the eye finds them.
    #[test]
    fn the_workbook_is_capped_at_its_content() {
        let placed = fit_columns(300, natural);
        let workbook = placed.iter().find(|p| p.col == Col::Workbook).unwrap();
        assert_eq!(workbook.width, natural(Col::Workbook));
        let used = placed.last().map_or(0, |p| p.x + p.width);
        assert!(used < 150, "{used}");
    }

    #[test]
    fn truncation_keeps_the_informative_end() {
        assert_eq!(keep_end("me/drive/items/01BUDGET2026", 15), "…s/01BUDGET2026");
        assert_eq!(keep_end("short", 15), "short");
        assert_eq!(keep_start("inventory-scratch", 10), "inventory…");
        let workbook = fit_columns(60, natural).into_iter().find(|p| p.col == Col::Workbook).unwrap();
        let text = keep_end("me/drive/items/01BUDGET2026", workbook.width as usize);
        assert!(text.starts_with('…') && text.ends_with("2026"), "{text}");
    }
}
