//! `PathPattern::parse` and `matches` on arbitrary text (`<pattern>\n<request path>`).
//!
//! Beyond not panicking, it checks the security property the type documents: an ambiguous
//! request path (a `.` or `..` segment, an empty inner segment, a backslash, or an encoded `/`,
//! `\` or `.`) matches no pattern; and a pattern without wildcards matches only itself.

#![no_main]

use latchkey_core::capability::PathPattern;
use latchkey_core_fuzz::split_pattern_and_path;
use libfuzzer_sys::fuzz_target;

fn is_ambiguous(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    let Some(rest) = path.strip_prefix('/') else { return true };
    let segments: Vec<&str> = rest.split('/').collect();
    let last = segments.len() - 1;
    ["%2f", "%5c", "%2e", "\\"].iter().any(|bad| lower.contains(bad))
        || segments.iter().enumerate().any(|(i, s)| {
            *s == "." || *s == ".." || (s.is_empty() && i != last && !rest.is_empty())
        })
}

fuzz_target!(|data: &[u8]| {
    let Some((pattern, path)) = split_pattern_and_path(data) else { return };
    let Ok(parsed) = PathPattern::parse(pattern) else { return };
    assert_eq!(parsed.as_str(), pattern, "a pattern keeps its text");
    assert!(PathPattern::parse(parsed.as_str()).is_ok(), "a pattern's text parses again");
    if parsed.matches(path) {
        assert!(!is_ambiguous(path), "ambiguous path {path:?} matched {pattern:?}");
        if !pattern.contains('*') {
            assert_eq!(path, pattern, "a literal pattern matches only itself");
        }
    }
});
