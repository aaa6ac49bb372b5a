//! The one list of keys: it drives the footer hints, the help overlay and the key lookup.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Up,
    Down,
    First,
    Last,
    Refresh,
    RefreshAll,
    Mark,
    ToggleAuto,
    PauseAll,
    Create,
    Track,
    Edit,
    Close,
    Remove,
    Filter,
    Sort,
    SignIn,
    FailingOnly,
    Details,
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
    pub hint: &'static str,
    /// Full, for the help overlay.
    pub help: &'static str,
    pub action: Action,
}

pub const KEYMAP: &[Binding] = &[
    Binding {
        keys: &[Key::Code(KeyCode::Up), Key::Char('k')],
        label: "↑/k",
        hint: "",
        help: "move up",
        action: Action::Up,
    },
    Binding {
        keys: &[Key::Code(KeyCode::Down), Key::Char('j')],
        label: "↓/j",
        hint: "",
        help: "move down",
        action: Action::Down,
    },
    Binding {
        keys: &[Key::Char('g'), Key::Code(KeyCode::Home)],
        label: "g",
        hint: "",
        help: "first session",
        action: Action::First,
    },
    Binding {
        keys: &[Key::Char('G'), Key::Code(KeyCode::End)],
        label: "G",
        hint: "",
        help: "last session",
        action: Action::Last,
    },
    Binding {
        keys: &[Key::Char('r')],
        label: "r",
        hint: "refresh",
        help: "refresh the selected (or marked) sessions",
        action: Action::Refresh,
    },
    Binding {
        keys: &[Key::Char('R')],
        label: "R",
        hint: "all",
        help: "refresh every session",
        action: Action::RefreshAll,
    },
    Binding {
        keys: &[Key::Char(' ')],
        label: "space",
        hint: "mark",
        help: "mark or unmark the selected session",
        action: Action::Mark,
    },
    Binding {
        keys: &[Key::Char('a')],
        label: "a",
        hint: "auto",
        help: "automatic refresh on/off for the selection",
        action: Action::ToggleAuto,
    },
    Binding {
        keys: &[Key::Char('p')],
        label: "p",
        hint: "pause",
        help: "pause or resume all automatic refreshes",
        action: Action::PauseAll,
    },
    Binding { keys: &[Key::Char('n')], label: "n", hint: "new", help: "create a new session", action: Action::Create },
    Binding {
        keys: &[Key::Char('i')],
        label: "i",
        hint: "track",
        help: "track an existing session id",
        action: Action::Track,
    },
    Binding { keys: &[Key::Char('e')], label: "e", hint: "edit", help: "edit name and interval", action: Action::Edit },
    Binding {
        keys: &[Key::Char('c')],
        label: "c",
        hint: "close",
        help: "close the session at Graph (asks first)",
        action: Action::Close,
    },
    Binding {
        keys: &[Key::Char('x')],
        label: "x",
        hint: "remove",
        help: "stop tracking the session (asks first)",
        action: Action::Remove,
    },
    Binding {
        keys: &[Key::Char('/')],
        label: "/",
        hint: "filter",
        help: "filter by name or workbook",
        action: Action::Filter,
    },
    Binding { keys: &[Key::Char('s')], label: "s", hint: "sort", help: "change the sort order", action: Action::Sort },
    Binding { keys: &[Key::Char('l')], label: "l", hint: "", help: "sign in (device code)", action: Action::SignIn },
    Binding {
        keys: &[Key::Char('f')],
        label: "f",
        hint: "failing",
        help: "show failing sessions only",
        action: Action::FailingOnly,
    },
    Binding {
        keys: &[Key::Code(KeyCode::Enter)],
        label: "enter",
        hint: "details",
        help: "show or hide the details pane",
        action: Action::Details,
    },
    Binding { keys: &[Key::Char('?')], label: "?", hint: "help", help: "this help", action: Action::Help },
    Binding {
        keys: &[Key::Char('q'), Key::Ctrl('c')],
        label: "q",
        hint: "quit",
        help: "quit (ctrl-c too)",
        action: Action::Quit,
    },
];

fn key_of(event: &KeyEvent) -> Key {
    match event.code {
        KeyCode::Char(c) if event.modifiers.contains(KeyModifiers::CONTROL) => Key::Ctrl(c.to_ascii_lowercase()),
        KeyCode::Char(c) => Key::Char(c),
        code => Key::Code(code),
    }
}

pub fn action_for(event: &KeyEvent) -> Option<Action> {
    let key = key_of(event);
    KEYMAP.iter().find(|b| b.keys.contains(&key)).map(|b| b.action)
}

/// The footer's hints, in keymap order.
pub fn footer_hints() -> impl Iterator<Item = (&'static str, &'static str)> {
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
        assert_eq!(action_for(&KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)), Some(Action::Quit));
        assert_eq!(action_for(&press(KeyCode::Char('z'))), None);
    }
}
