//! Where each part of the screen goes: computed by `update` (for the mouse and the scroll
//! offset) and read by the view, so both agree.

use ratatui::layout::{Constraint, Layout, Rect};

pub const MIN_WIDTH: u16 = 40;
pub const MIN_HEIGHT: u16 = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Areas {
    pub too_small: bool,
    pub screen: Rect,
    pub header: Rect,
    /// The table with its title and column headers.
    pub table: Rect,
    /// Where the table's rows are drawn.
    pub table_rows: Rect,
    pub detail: Rect,
    pub footer: Rect,
}

pub fn areas(width: u16, height: u16, details: bool) -> Areas {
    let screen = Rect::new(0, 0, width, height);
    if width < MIN_WIDTH || height < MIN_HEIGHT {
        return Areas { too_small: true, screen, ..Areas::default() };
    }
    let detail_height = if details { (height / 2).clamp(6, 18) } else { 0 };
    let [header, table, detail, footer] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Min(3),
        Constraint::Length(detail_height),
        Constraint::Length(1),
    ])
    .areas(screen);
    // A top border with the title, then the column headers.
    let table_rows = Rect { y: table.y + 2, height: table.height.saturating_sub(2), ..table };
    Areas { too_small: false, screen, header, table, table_rows, detail, footer }
}
