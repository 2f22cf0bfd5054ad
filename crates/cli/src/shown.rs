//! Text the broker or an agent supplied (names, paths, hosts, query names), made safe to print
//! on a person's terminal.

use std::borrow::Cow;
use std::fmt::Write as _;

/// `text` as it may be printed on a terminal: every character a terminal would act on instead
/// of showing (C0 and C1 controls, DEL, and the bidirectional embeddings, overrides and
/// isolates that reorder what follows) is written out visibly as `\u{..}`. An agent that names
/// a query parameter `ESC[2J` cannot clear the approver's screen or disguise the call.
pub(crate) fn shown(text: &str) -> Cow<'_, str> {
    if !text.chars().any(acts_on_terminal) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if acts_on_terminal(c) {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Each of `texts` [`shown`], joined with `separator`.
pub(crate) fn shown_all(texts: &[String], separator: &str) -> String {
    texts.iter().map(|t| shown(t)).collect::<Vec<_>>().join(separator)
}

/// C0 (U+0000-001F), DEL (U+007F), C1 (U+0080-009F) and the bidi controls U+202A-202E and
/// U+2066-2069.
fn acts_on_terminal(c: char) -> bool {
    latchkey_core::text::acts_on_display(c)
}

#[cfg(test)]
mod tests {
    use super::{shown, shown_all};

    #[test]
    fn controls_and_bidi_overrides_are_written_out_and_the_rest_is_kept() {
        assert_eq!(
            shown("\u{1b}[2J\u{1b}[Hinnocent"),
            "\\u{1b}[2J\\u{1b}[Hinnocent",
            "an escape sequence must be shown, never sent to the terminal"
        );
        for (raw, expected, why) in [
            ("a\0b", "a\\u{0}b", "NUL (C0)"),
            ("a\nb\rc\td", "a\\u{a}b\\u{d}c\\u{9}d", "line breaks and tabs (C0)"),
            ("\u{7}bell", "\\u{7}bell", "BEL (C0)"),
            ("x\u{7f}", "x\\u{7f}", "DEL"),
            ("\u{9b}2J", "\\u{9b}2J", "CSI (C1)"),
            ("\u{85}", "\\u{85}", "NEL (C1)"),
            ("evil\u{202e}gpj.exe", "evil\\u{202e}gpj.exe", "a right-to-left override"),
            (
                "\u{202a}\u{202b}\u{202c}\u{202d}",
                "\\u{202a}\\u{202b}\\u{202c}\\u{202d}",
                "embeddings",
            ),
            (
                "\u{2066}a\u{2067}b\u{2068}c\u{2069}",
                "\\u{2066}a\\u{2067}b\\u{2068}c\\u{2069}",
                "isolates",
            ),
        ] {
            assert_eq!(shown(raw), expected, "{why} must be escaped");
        }
        for plain in ["ci-bot", "/v1/models", "api.openai.com:443", "Zoë's bot ✓", "名前", ""]
        {
            assert_eq!(shown(plain), plain, "printable text is shown as it is");
        }
        assert_eq!(
            shown_all(&["limit".to_owned(), "\u{1b}]0;x\u{7}".to_owned()], ", "),
            "limit, \\u{1b}]0;x\\u{7}",
            "every item of a list is escaped"
        );
    }
}
