//! The one list of keys: it drives the footer hints, the help overlay and the key lookup.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Up,
    Down,
    PageUp,
    PageDown,
    HalfUp,
    HalfDown,
    First,
    Last,
    Refresh,
    RefreshAll,
    Mark,
    MarkAll,
    InvertMarks,
    ClearMarks,
    ToggleAuto,
    PauseAll,
    Create,
    Track,
    Edit,
    Recreate,
    Close,
    Remove,
    CopyId,
    CopyUrl,
    Filter,
    Sort,
    Reverse,
    FailingOnly,
    Times,
    Details,
    Focus,
    Log,
    SignIn,
    Help,
    Quit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    Char(char),
    Ctrl(char),
    Code(KeyCode),
}

pub struct Binding {
    pub keys: &'static [Key],
    /// How the keys are written in hints: `↑↓/jk`.
    pub label: &'static str,
    /// Short, for the footer; empty keeps the binding out of the footer.
    pub(crate) hint: &'static str,
    /// Full, for the help overlay.
    pub help: &'static str,
    pub action: Action,
}

const fn bind(
    keys: &'static [Key],
    label: &'static str,
    hint: &'static str,
    help: &'static str,
    action: Action,
) -> Binding {
    Binding { keys, label, hint, help, action }
}

/// In the order the footer offers them, most used first; the last two are always shown.
pub const KEYMAP: &[Binding] = &[
    bind(&[Key::Char('r')], "r", "refresh", "refresh the selected (or marked) sessions", Action::Refresh),
    bind(&[Key::Char('R')], "R", "all", "refresh every session that is not closed", Action::RefreshAll),
    bind(&[Key::Char(' ')], "space", "mark", "mark or unmark the selected session", Action::Mark),
    bind(&[Key::Char('y')], "y", "copy id", "copy the session id (OSC 52: works over SSH and in tmux)", Action::CopyId),
    bind(&[Key::Char('n')], "n", "new", "create a new session", Action::Create),
    bind(&[Key::Char('e')], "e", "edit", "edit name, interval, recreate, automatic", Action::Edit),
    bind(&[Key::Char('a')], "a", "auto", "automatic refresh on/off for the selection", Action::ToggleAuto),
    bind(&[Key::Char('p')], "p", "pause", "pause or resume automatic refresh for the whole store", Action::PauseAll),
    bind(
        &[Key::Char('/')],
        "/",
        "filter",
        "filter by name or workbook; status:WORD by status (status:expired)",
        Action::Filter,
    ),
    bind(&[Key::Char('s')], "s", "sort", "sort by the next column", Action::Sort),
    bind(&[Key::Code(KeyCode::Enter)], "enter", "details", "show or hide the details pane", Action::Details),
    bind(&[Key::Char('L')], "L", "log", "recent warnings and errors, and where the log file is", Action::Log),
    bind(&[Key::Char('i')], "i", "track", "track an existing session id", Action::Track),
    bind(
        &[Key::Char('N')],
        "N",
        "recreate",
        "recreate: a new session replaces the selected one's id (asks first)",
        Action::Recreate,
    ),
    bind(&[Key::Char('c')], "c", "close", "close the session at Graph (asks first)", Action::Close),
    bind(&[Key::Char('x')], "x", "remove", "stop tracking the session (asks first)", Action::Remove),
    bind(&[Key::Char('A')], "A", "", "mark every shown session (again: unmark them)", Action::MarkAll),
    bind(&[Key::Char('*')], "*", "", "invert the marks of the shown sessions", Action::InvertMarks),
    bind(&[Key::Char('U')], "U", "", "clear every mark, shown or not", Action::ClearMarks),
    bind(&[Key::Char('Y')], "Y", "", "copy the workbook URL", Action::CopyUrl),
    bind(&[Key::Char('S')], "S", "", "reverse the sort", Action::Reverse),
    bind(&[Key::Char('f')], "f", "", "show failing sessions only", Action::FailingOnly),
    bind(&[Key::Char('t')], "t", "", "relative times or absolute local times", Action::Times),
    bind(&[Key::Code(KeyCode::Tab)], "tab", "", "move the focus between the table and the details", Action::Focus),
    bind(&[Key::Char('l')], "l", "", "sign in (device code)", Action::SignIn),
    bind(&[Key::Code(KeyCode::Up), Key::Char('k')], "↑/k", "", "move up", Action::Up),
    bind(&[Key::Code(KeyCode::Down), Key::Char('j')], "↓/j", "", "move down", Action::Down),
    bind(&[Key::Code(KeyCode::PageUp)], "pgup", "", "a page up", Action::PageUp),
    bind(&[Key::Code(KeyCode::PageDown)], "pgdn", "", "a page down", Action::PageDown),
    bind(&[Key::Ctrl('u')], "ctrl-u", "", "half a page up", Action::HalfUp),
    bind(&[Key::Ctrl('d')], "ctrl-d", "", "half a page down", Action::HalfDown),
    bind(&[Key::Char('g'), Key::Code(KeyCode::Home)], "g/home", "", "first session", Action::First),
    bind(&[Key::Char('G'), Key::Code(KeyCode::End)], "G/end", "", "last session", Action::Last),
    bind(&[Key::Char('?')], "?", "help", "this help (j/k and page keys scroll it)", Action::Help),
    bind(&[Key::Char('q'), Key::Ctrl('c')], "q", "quit", "quit (ctrl-c too)", Action::Quit),
];

/// What the help lists besides the keys: the keys that are not actions.
pub(crate) const OTHER_KEYS: &[(&str, &str)] = &[
    ("esc", "close a dialog or overlay, else clear the message, filter, marks"),
    ("mouse", "click a row to select it, a header to sort by it; the wheel scrolls"),
];

/// Lines of the help overlay: the keys, the other keys, the status legend with its heading and a
/// blank line before it, a blank line and the log folder (`view::help_lines` draws them).
pub fn help_len() -> usize {
    KEYMAP.len() + OTHER_KEYS.len() + 2 + crate::session::Status::ALL.len() + 2
}

fn key_of(event: &KeyEvent) -> Key {
    match event.code {
        KeyCode::Char(c) if event.modifiers.contains(KeyModifiers::CONTROL) => Key::Ctrl(c.to_ascii_lowercase()),
        KeyCode::Char(c) => Key::Char(c),
        code => Key::Code(code),
    }
}

pub(crate) fn action_for(event: &KeyEvent) -> Option<Action> {
    let key = key_of(event);
    KEYMAP.iter().find(|b| b.keys.contains(&key)).map(|b| b.action)
}

/// The footer's hints, in keymap order.
pub(crate) fn footer_hints() -> impl Iterator<Item = (&'static str, &'static str)> {
    KEYMAP.iter().filter(|b| !b.hint.is_empty()).map(|b| (b.label, b.hint))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_key_is_bound_twice() {
        let mut seen = Vec::new();
        for binding in KEYMAP {
            for key in binding.keys {
                assert!(!seen.contains(key), "{key:?} is bound twice");
                seen.push(*key);
            }
        }
    }

    #[test]
    fn keys_resolve_to_actions() {
        let press = |code| KeyEvent::new(code, KeyModifiers::NONE);
        assert_eq!(action_for(&press(KeyCode::Char('r'))), Some(Action::Refresh));
        assert_eq!(action_for(&press(KeyCode::Char('R'))), Some(Action::RefreshAll));
        assert_eq!(action_for(&press(KeyCode::Down)), Some(Action::Down));
        assert_eq!(action_for(&press(KeyCode::PageDown)), Some(Action::PageDown));
        assert_eq!(action_for(&KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)), Some(Action::Quit));
        assert_eq!(action_for(&KeyEvent::new(KeyCode::Char('d'), KeyModifiers::CONTROL)), Some(Action::HalfDown));
        assert_eq!(action_for(&press(KeyCode::Char('z'))), None);
    }

    #[test]
    fn the_footer_ends_with_help_and_quit() {
        let hints: Vec<_> = footer_hints().collect();
        assert_eq!(&hints[hints.len() - 2..], &[("?", "help"), ("q", "quit")]);
    }
}
