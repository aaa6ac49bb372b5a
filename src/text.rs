//! Text that came from elsewhere (a server, a file) made safe to store and to print: no control
//! characters or escape sequences that could retitle a terminal, write its clipboard or forge
//! output lines, and a bounded length.

/// "10,000": a count as people read it.
pub(crate) fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// "40 refreshed: 38 ok, 2 dead", the words in the order they first came.
pub(crate) fn summary<'a>(total: usize, past: &str, ok: usize, failed: impl IntoIterator<Item = &'a str>) -> String {
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for word in failed {
        match counts.iter_mut().find(|(w, _)| *w == word) {
            Some((_, n)) => *n += 1,
            None => counts.push((word, 1)),
        }
    }
    let mut parts = vec![format!("{} ok", thousands(ok))];
    parts.extend(counts.into_iter().map(|(word, n)| format!("{} {word}", thousands(n))));
    format!("{} {past}: {}", thousands(total), parts.join(", "))
}

/// `a, b and 3 more`: a list of names that stays one readable line.
pub(crate) fn names_line(names: &[String]) -> String {
    const SHOWN: usize = 5;
    match names.len() {
        0 => String::new(),
        n if n <= SHOWN => names.join(", "),
        n => format!("{} and {} more", names[..SHOWN].join(", "), thousands(n - SHOWN)),
    }
}

/// "1 session", "10,000 sessions".
pub fn count(n: usize, what: &str) -> String {
    if n == 1 { format!("1 {what}") } else { format!("{} {what}s", thousands(n)) }
}

/// The longest message kept from a server answer; Graph's own messages are a sentence or two.
pub(crate) const MAX_MESSAGE: usize = 1000;

/// The longest code or id kept from a server answer.
pub(crate) const MAX_TOKEN: usize = 200;

/// Removes escape sequences and control characters (newlines become spaces) and keeps at most
/// `max` characters, marking a cut with `…`.
pub(crate) fn clean(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max + 4));
    let mut chars = text.chars().peekable();
    let mut count = 0;
    while let Some(c) = chars.next() {
        let piece = match c {
            // ESC starts a sequence: CSI (`[` … final byte), OSC (`]` … BEL or ST) or a two-byte one.
            '\u{1b}' => {
                match chars.next() {
                    Some('[') => {
                        for c in chars.by_ref() {
                            if ('\u{40}'..='\u{7e}').contains(&c) {
                                break;
                            }
                        }
                    }
                    Some(']' | 'P' | '^' | '_' | 'X') => skip_string(&mut chars),
                    _ => {}
                }
                continue;
            }
            // The 8-bit forms of CSI and OSC.
            '\u{9b}' => {
                for c in chars.by_ref() {
                    if ('\u{40}'..='\u{7e}').contains(&c) {
                        break;
                    }
                }
                continue;
            }
            '\u{9d}' | '\u{90}' | '\u{9e}' | '\u{9f}' => {
                skip_string(&mut chars);
                continue;
            }
            '\n' | '\r' | '\t' | '\u{2028}' | '\u{2029}' | '\u{85}' => ' ',
            c if c.is_control() || is_format(c) => continue,
            c => c,
        };
        if count == max {
            out.push('…');
            return out;
        }
        out.push(piece);
        count += 1;
    }
    out
}

/// What a person typed, shown back in a message: every control and format character written
/// as `\u{..}` (the input stays recognisable, and nothing reaches the terminal that could change
/// it), at most `max` characters, a cut marked with `…`.
pub(crate) fn escaped(text: &str, max: usize) -> String {
    let mut out = String::new();
    for (count, c) in text.chars().enumerate() {
        if count == max {
            out.push('…');
            break;
        }
        if c.is_control() || is_format(c) || matches!(c, '\u{2028}' | '\u{2029}') {
            out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

/// Unicode format characters (category Cf): invisible, and some reorder what a line shows
/// (bidirectional controls) or hide what it holds (zero-width ones).
pub(crate) fn is_format(c: char) -> bool {
    matches!(c,
        '\u{ad}'
        | '\u{600}'..='\u{605}'
        | '\u{61c}'
        | '\u{6dd}'
        | '\u{70f}'
        | '\u{890}'..='\u{891}'
        | '\u{8e2}'
        | '\u{180e}'
        | '\u{200b}'..='\u{200f}'
        | '\u{202a}'..='\u{202e}'
        | '\u{2060}'..='\u{2064}'
        | '\u{2066}'..='\u{206f}'
        | '\u{feff}'
        | '\u{fff9}'..='\u{fffb}'
        | '\u{110bd}'
        | '\u{110cd}'
        | '\u{13430}'..='\u{1343f}'
        | '\u{1bca0}'..='\u{1bca3}'
        | '\u{1d173}'..='\u{1d17a}'
        | '\u{e0001}'
        | '\u{e0020}'..='\u{e007f}')
}

/// Skips an OSC/DCS-style string up to BEL or ST (`ESC \`).
fn skip_string(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    while let Some(c) = chars.next() {
        match c {
            '\u{7}' | '\u{9c}' => return,
            '\u{1b}' if chars.peek() == Some(&'\\') => {
                chars.next();
                return;
            }
            _ => {}
        }
    }
}

/// `clean` for an optional value, dropping one that is empty once cleaned.
pub(crate) fn clean_opt(text: Option<&str>, max: usize) -> Option<String> {
    text.map(|t| clean(t, max)).map(|t| t.trim().to_string()).filter(|t| !t.is_empty())
}

/// Compares names as people read them: `s2` before `s10`, case aside (case breaks ties only).
pub(crate) fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    natural(a.as_bytes(), b.as_bytes()).then_with(|| a.cmp(b))
}

fn natural(mut a: &[u8], mut b: &[u8]) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    loop {
        match (a.first(), b.first()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let da = a.iter().take_while(|c| c.is_ascii_digit()).count();
                let db = b.iter().take_while(|c| c.is_ascii_digit()).count();
                let (ta, tb) = (trim_zeros(&a[..da]), trim_zeros(&b[..db]));
                let order = ta.len().cmp(&tb.len()).then_with(|| ta.cmp(tb)).then_with(|| da.cmp(&db));
                if order != Ordering::Equal {
                    return order;
                }
                a = &a[da..];
                b = &b[db..];
            }
            (Some(x), Some(y)) => {
                let order = x.to_ascii_lowercase().cmp(&y.to_ascii_lowercase());
                if order != Ordering::Equal {
                    return order;
                }
                a = &a[1..];
                b = &b[1..];
            }
        }
    }
}

fn trim_zeros(digits: &[u8]) -> &[u8] {
    let zeros = digits.iter().take_while(|c| **c == b'0').count();
    &digits[zeros.min(digits.len().saturating_sub(1))..]
}

/// `%XX` escapes decoded once (anything else left as it is), read as UTF-8 leniently.
pub(crate) fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(high), Some(low)) => {
                out.push((high * 16 + low) as u8);
                i += 3;
            }
            (byte, ..) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_text_is_shown_back_with_its_invisible_characters_written_out() {
        assert_eq!(escaped("me/drive/items/W1\u{1b}", 100), "me/drive/items/W1\\u{1b}");
        assert_eq!(escaped("a\u{202e}b", 100), "a\\u{202e}b");
        assert_eq!(escaped("abcdef", 3), "abc…");
        assert_eq!(escaped("plain", 5), "plain");
    }

    #[test]
    fn escapes_and_controls_are_removed() {
        assert_eq!(clean("a\u{1b}]2;pwned\u{7}b", 100), "ab");
        assert_eq!(clean("a\u{1b}]52;c;aGk=\u{1b}\\b", 100), "ab");
        assert_eq!(clean("red \u{1b}[31mtext\u{1b}[0m", 100), "red text");
        assert_eq!(clean("line1\nline2\r\n", 100), "line1 line2  ");
        assert_eq!(clean("nul\0bell\u{7}", 100), "nulbell");
        assert_eq!(clean("\u{9b}31mx", 100), "x");
        assert_eq!(clean("abc\u{202e}def", 100), "abcdef");
        assert_eq!(clean("unterminated \u{1b}]0;title", 100), "unterminated ");
        // Invisible and reordering characters: bidi controls, zero-width ones, line separators.
        for hidden in ['\u{200b}', '\u{200f}', '\u{061c}', '\u{2066}', '\u{feff}', '\u{e0041}'] {
            assert_eq!(clean(&format!("a{hidden}b"), 100), "ab", "{:?}", hidden);
        }
        assert_eq!(clean("a\u{2028}b\u{2029}c", 100), "a b c");
    }

    #[test]
    fn counts_and_summaries_read_as_people_write_them() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(10_000), "10,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(
            summary(10_000, "refreshed", 9_998, ["expired", "expired"]),
            "10,000 refreshed: 9,998 ok, 2 expired"
        );
        assert_eq!(summary(3, "closed", 1, ["dead", "throttled"]), "3 closed: 1 ok, 1 dead, 1 throttled");
    }

    #[test]
    fn long_text_is_cut_with_a_mark() {
        assert_eq!(clean("abcdef", 3), "abc…");
        assert_eq!(clean("abc", 3), "abc");
        assert_eq!(clean_opt(Some("  \n "), 10), None);
    }

    #[test]
    fn names_sort_naturally() {
        let mut names = vec!["s10", "s2", "s1", "S3", "s02", "a", "s100"];
        names.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(names, ["a", "s1", "s2", "s02", "S3", "s10", "s100"]);
    }
}
