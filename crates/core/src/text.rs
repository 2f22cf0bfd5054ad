//! Text one party writes and another shows to people (an account name a provider answered, a name
//! in a listing): the characters that act on a display instead of showing.

/// The longest account name a credential carries, in characters: the broker refuses longer ones
/// and devices cut what a provider answers to this length.
pub const MAX_ACCOUNT_CHARS: usize = 200;

/// Whether `c` acts on the text around it instead of showing: a control character (C0, DEL, C1),
/// which can end a terminal's or a log's line or drive the terminal, or a bidirectional
/// embedding, override or isolate (U+202A-202E, U+2066-2069), which displays text in another
/// order than it is stored, so that one name can pose as another.
pub fn acts_on_display(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::acts_on_display;

    #[test]
    fn controls_and_reordering_characters_act_on_the_display_and_nothing_else_does() {
        let acting = ['\0', '\n', '\u{1b}', '\u{7f}', '\u{85}', '\u{9f}', '\u{202a}', '\u{202e}'];
        for c in acting.into_iter().chain(['\u{2066}', '\u{2069}']) {
            assert!(acts_on_display(c), "{c:?} acts on the display");
        }
        for c in ['a', ' ', 'é', '€', '😀', '\u{2029}', '\u{2065}', '\u{206a}', '\u{202f}', '@']
        {
            assert!(!acts_on_display(c), "{c:?} shows as itself");
        }
    }
}
