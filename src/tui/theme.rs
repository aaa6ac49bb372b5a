//! Every colour on screen, by what it marks: a preset fills them all (so that a light or a
//! Solarized terminal gets chrome it can show), `[ui.colors]` then recolours statuses, and `mono`
//! (chosen, or forced by `NO_COLOR` or `TERM=dumb`) draws with words, bold and reverse video only.

use std::collections::HashMap;

use ratatui::style::{Color, Modifier, Style};

pub use crate::config::ThemePreset;
use crate::session::Status;

#[derive(Debug, Clone, PartialEq)]
pub struct Palette {
    pub preset: ThemePreset,
    statuses: HashMap<Status, Style>,
    /// Separators, labels, hints: what frames the data.
    chrome: Style,
    key: Style,
    info: Style,
    error: Style,
    warning: Style,
    selected: Style,
    badge: Style,
    accent: Style,
    /// The life left before Graph would expire a session: under 90 s, then under 30 s.
    soon: Style,
    urgent: Style,
}

fn fg(color: Color) -> Style {
    Style::new().fg(color)
}

impl Palette {
    /// The preset's colours with the user's status colours over them; `mono` keeps none.
    pub fn new(preset: ThemePreset, custom: &HashMap<Status, Color>) -> Palette {
        let mut palette = Palette::preset(preset);
        if preset != ThemePreset::Mono {
            for (status, color) in custom {
                palette.statuses.insert(*status, fg(*color));
            }
        }
        palette
    }

    fn preset(preset: ThemePreset) -> Palette {
        // (ok, refreshing, stale and expired, throttled, failing, new and closed)
        let (ok, busy, late, held, bad, quiet) = match preset {
            ThemePreset::Dark => (
                fg(Color::Green),
                fg(Color::Cyan),
                fg(Color::Yellow),
                fg(Color::Magenta),
                fg(Color::Red),
                fg(Color::DarkGray),
            ),
            // Yellow and cyan fade into a white background, and colour 8 is too pale there:
            // darker shades from the 256-colour cube instead.
            ThemePreset::Light => (
                fg(Color::Indexed(28)),
                fg(Color::Indexed(25)),
                fg(Color::Indexed(130)),
                fg(Color::Indexed(90)),
                fg(Color::Indexed(160)),
                fg(Color::Indexed(242)),
            ),
            // Solarized maps colour 8 to its background (base03): quiet text uses base01
            // (colour 10) as Solarized's own comments do.
            ThemePreset::SolarizedDark => (
                fg(Color::Green),
                fg(Color::Cyan),
                fg(Color::Yellow),
                fg(Color::Magenta),
                fg(Color::Red),
                fg(Color::LightGreen),
            ),
            ThemePreset::Mono => Default::default(),
        };
        let statuses = Status::ALL
            .into_iter()
            .map(|status| {
                let style = match status {
                    Status::Ok => ok,
                    Status::Refreshing => busy,
                    Status::Stale | Status::Expired => late,
                    Status::Throttled => held,
                    Status::Dead | Status::Auth | Status::Error | Status::Damaged => bad,
                    Status::New | Status::Closed => quiet,
                };
                (status, style)
            })
            .collect();
        let bold = Style::new().add_modifier(Modifier::BOLD);
        match preset {
            ThemePreset::Dark => Palette {
                preset,
                statuses,
                chrome: quiet,
                key: fg(Color::Cyan).add_modifier(Modifier::BOLD),
                info: ok,
                error: bad.add_modifier(Modifier::BOLD),
                warning: late.add_modifier(Modifier::BOLD),
                selected: Style::new().bg(Color::Blue).fg(Color::White),
                badge: Style::new().bg(Color::Yellow).fg(Color::Black),
                accent: busy,
                soon: late,
                urgent: bad,
            },
            ThemePreset::Light => Palette {
                preset,
                statuses,
                chrome: quiet,
                key: fg(Color::Indexed(25)).add_modifier(Modifier::BOLD),
                info: ok,
                error: bad.add_modifier(Modifier::BOLD),
                warning: late.add_modifier(Modifier::BOLD),
                selected: Style::new().bg(Color::Indexed(25)).fg(Color::Indexed(231)),
                badge: Style::new().bg(Color::Indexed(130)).fg(Color::Indexed(231)),
                accent: busy,
                soon: late,
                urgent: bad,
            },
            ThemePreset::SolarizedDark => Palette {
                preset,
                statuses,
                chrome: quiet,
                key: fg(Color::Blue).add_modifier(Modifier::BOLD),
                info: ok,
                error: bad.add_modifier(Modifier::BOLD),
                warning: late.add_modifier(Modifier::BOLD),
                // base02 behind base1: Solarized's own highlight.
                selected: Style::new().bg(Color::Black).fg(Color::LightCyan),
                badge: Style::new().bg(Color::Yellow).fg(Color::Black),
                accent: busy,
                soon: late,
                urgent: bad,
            },
            ThemePreset::Mono => Palette {
                preset,
                statuses,
                chrome: Style::new(),
                key: bold,
                info: Style::new(),
                error: bold,
                warning: bold,
                selected: Style::new().add_modifier(Modifier::REVERSED),
                badge: Style::new().add_modifier(Modifier::REVERSED),
                accent: Style::new(),
                soon: Style::new(),
                urgent: bold,
            },
        }
    }

    pub(crate) fn status(&self, status: Status) -> Style {
        self.statuses.get(&status).copied().unwrap_or_default()
    }

    pub(crate) fn chrome(&self) -> Style {
        self.chrome
    }

    pub(crate) fn key(&self) -> Style {
        self.key
    }

    pub(crate) fn info(&self) -> Style {
        self.info
    }

    pub(crate) fn error(&self) -> Style {
        self.error
    }

    pub(crate) fn warning(&self) -> Style {
        self.warning
    }

    pub(crate) fn selected(&self) -> Style {
        self.selected
    }

    pub(crate) fn badge(&self) -> Style {
        self.badge
    }

    pub(crate) fn accent(&self) -> Style {
        self.accent
    }

    /// The life left before Graph would expire a session: calm, then `soon`, then `urgent`.
    pub(crate) fn expiry(&self, left: Option<chrono::TimeDelta>) -> Style {
        match left {
            Some(left) if left <= chrono::TimeDelta::seconds(30) => self.urgent,
            Some(left) if left <= chrono::TimeDelta::seconds(90) => self.soon,
            _ => Style::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Colour 8 is the background of Solarized Dark and pale on white: only `dark` uses it.
    #[test]
    fn only_the_dark_preset_uses_colour_8() {
        for preset in [ThemePreset::Light, ThemePreset::SolarizedDark, ThemePreset::Mono] {
            let palette = Palette::new(preset, &HashMap::new());
            let mut styles: Vec<Style> = Status::ALL.into_iter().map(|s| palette.status(s)).collect();
            styles.extend([
                palette.chrome(),
                palette.key(),
                palette.info(),
                palette.error(),
                palette.warning(),
                palette.selected(),
                palette.badge(),
                palette.accent(),
                palette.expiry(Some(chrono::TimeDelta::seconds(10))),
                palette.expiry(Some(chrono::TimeDelta::seconds(60))),
            ]);
            for style in styles {
                assert_ne!(style.fg, Some(Color::DarkGray), "{preset:?}");
                assert_ne!(style.bg, Some(Color::DarkGray), "{preset:?}");
            }
        }
    }

    #[test]
    fn mono_has_no_colour_even_with_custom_status_colours() {
        let custom = HashMap::from([(Status::Ok, Color::Green)]);
        let palette = Palette::new(ThemePreset::Mono, &custom);
        for status in Status::ALL {
            assert_eq!(palette.status(status).fg, None);
        }
        assert_eq!(palette.selected().bg, None);
    }

    #[test]
    fn custom_colours_replace_a_presets_status_colours() {
        let custom = HashMap::from([(Status::Ok, Color::Rgb(0, 255, 0))]);
        let palette = Palette::new(ThemePreset::Light, &custom);
        assert_eq!(palette.status(Status::Ok).fg, Some(Color::Rgb(0, 255, 0)));
        assert_eq!(palette.status(Status::Dead).fg, Some(Color::Indexed(160)));
    }
}
