//! A small, strict parser and serializer for the parts of Structured Field Values (RFC 8941) that
//! `Signature-Input`, `Signature` and `Content-Digest` use: a dictionary whose members are items
//! or inner lists, with parameters; bare items that are integers, strings, tokens, byte sequences
//! or booleans.
//!
//! Stricter than RFC 8941 on purpose, because every value parsed here is security-relevant:
//!
//! - a repeated dictionary key or parameter key is an error (RFC 8941 keeps the last one), so two
//!   parties can never read different values out of the same field;
//! - decimals, dates and display strings are not supported;
//! - byte sequences must be canonical, padded base64 (RFC 8941 §3.3.5 tolerates missing padding).
//!
//! The parser is iterative (no nesting beyond one inner list level), never panics, and every
//! failure is a short static description. Callers bound the input length before parsing.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// A bare item (RFC 8941 §3.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BareItem {
    /// sf-integer: at most 15 digits, optional minus sign.
    Integer(i64),
    /// sf-string: printable ASCII.
    String(String),
    /// sf-token.
    Token(String),
    /// sf-binary.
    Bytes(Vec<u8>),
    /// sf-boolean.
    Boolean(bool),
}

/// Parameters, in the order they appeared. Keys are unique.
pub(crate) type Parameters = Vec<(String, BareItem)>;

/// An item with its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Item {
    pub(crate) value: BareItem,
    pub(crate) params: Parameters,
}

/// A dictionary member's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Member {
    Item(Item),
    InnerList { items: Vec<Item>, params: Parameters },
}

/// A dictionary, in the order its members appeared. Keys are unique.
pub(crate) type Dictionary = Vec<(String, Member)>;

/// Largest integer magnitude RFC 8941 allows (15 decimal digits).
pub(crate) const MAX_INTEGER: i64 = 999_999_999_999_999;

/// Parses a whole field value as a dictionary (RFC 8941 §4.2.2).
pub(crate) fn parse_dictionary(input: &str) -> Result<Dictionary, &'static str> {
    let mut parser = Parser::new(input)?;
    parser.skip_sp();
    let mut dict = Dictionary::new();
    while !parser.is_empty() {
        let key = parser.key()?;
        let member = if parser.eat(b'=') {
            parser.item_or_inner_list()?
        } else {
            Member::Item(Item { value: BareItem::Boolean(true), params: parser.parameters()? })
        };
        if dict.iter().any(|(k, _)| *k == key) {
            return Err("duplicate dictionary key");
        }
        dict.push((key, member));
        parser.skip_ows();
        if parser.is_empty() {
            return Ok(dict);
        }
        if !parser.eat(b',') {
            return Err("expected a comma between dictionary members");
        }
        parser.skip_ows();
        if parser.is_empty() {
            return Err("trailing comma");
        }
    }
    // RFC 8941: an empty field value is an empty dictionary; every caller here needs a member.
    Err("empty dictionary")
}

/// Serializes a string (RFC 8941 §4.1.6). The caller guarantees printable ASCII.
pub(crate) fn write_string(out: &mut String, value: &str) {
    out.push('"');
    for c in value.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

/// Serializes a byte sequence (RFC 8941 §4.1.8).
pub(crate) fn write_bytes(out: &mut String, value: &[u8]) {
    out.push(':');
    out.push_str(&STANDARD.encode(value));
    out.push(':');
}

/// Serializes a bare item. Strings and tokens must be valid (checked at construction or parse).
pub(crate) fn write_bare_item(out: &mut String, value: &BareItem) {
    match value {
        BareItem::Integer(i) => out.push_str(&i.to_string()),
        BareItem::String(s) => write_string(out, s),
        BareItem::Token(t) => out.push_str(t),
        BareItem::Bytes(b) => write_bytes(out, b),
        BareItem::Boolean(true) => out.push_str("?1"),
        BareItem::Boolean(false) => out.push_str("?0"),
    }
}

/// Serializes parameters (RFC 8941 §4.1.1.2): `;key` for true, `;key=value` otherwise.
pub(crate) fn write_parameters(out: &mut String, params: &[(String, BareItem)]) {
    for (key, value) in params {
        out.push(';');
        out.push_str(key);
        if *value != BareItem::Boolean(true) {
            out.push('=');
            write_bare_item(out, value);
        }
    }
}

/// Whether `s` is a valid key (RFC 8941 §3.1.2): `( lcalpha / "*" ) *( lcalpha / DIGIT / "_" /
/// "-" / "." / "*" )`.
pub(crate) fn is_key(s: &str) -> bool {
    let mut bytes = s.bytes();
    match bytes.next() {
        Some(b) if b.is_ascii_lowercase() || b == b'*' => {}
        _ => return false,
    }
    bytes.all(is_key_char)
}

/// Whether `s` can be an sf-string: printable ASCII (0x20..=0x7e).
pub(crate) fn is_string(s: &str) -> bool {
    s.bytes().all(|b| (0x20..=0x7e).contains(&b))
}

fn is_key_char(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'.' | b'*')
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'.'
                | b'^'
                | b'_'
                | b'`'
                | b'|'
                | b'~'
        )
}

fn is_base64_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=')
}

struct Parser<'a> {
    input: &'a [u8],
    pos: usize,
}

impl<'a> Parser<'a> {
    fn new(input: &'a str) -> Result<Self, &'static str> {
        // RFC 8941 §4.2: field values are ASCII; HTAB appears only as optional whitespace.
        if !input.bytes().all(|b| b == b'\t' || (0x20..=0x7e).contains(&b)) {
            return Err("non-ASCII or control character");
        }
        Ok(Self { input: input.as_bytes(), pos: 0 })
    }

    fn peek(&self) -> Option<u8> {
        self.input.get(self.pos).copied()
    }

    fn is_empty(&self) -> bool {
        self.pos >= self.input.len()
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn skip_sp(&mut self) {
        while self.peek() == Some(b' ') {
            self.pos += 1;
        }
    }

    fn skip_ows(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
    }

    /// Consumes bytes while `pred` holds and returns them as a string slice.
    fn take_while(&mut self, pred: impl Fn(u8) -> bool) -> &'a str {
        let start = self.pos;
        while self.peek().is_some_and(&pred) {
            self.pos += 1;
        }
        // The input was checked to be ASCII in `new`, so any byte range is valid UTF-8.
        core::str::from_utf8(&self.input[start..self.pos]).unwrap_or_default()
    }

    fn key(&mut self) -> Result<String, &'static str> {
        match self.peek() {
            Some(b) if b.is_ascii_lowercase() || b == b'*' => {}
            _ => return Err("expected a key"),
        }
        Ok(self.take_while(is_key_char).to_owned())
    }

    fn item_or_inner_list(&mut self) -> Result<Member, &'static str> {
        if self.peek() == Some(b'(') { self.inner_list() } else { Ok(Member::Item(self.item()?)) }
    }

    fn inner_list(&mut self) -> Result<Member, &'static str> {
        self.pos += 1; // '('
        let mut items = Vec::new();
        loop {
            self.skip_sp();
            if self.eat(b')') {
                let params = self.parameters()?;
                return Ok(Member::InnerList { items, params });
            }
            if self.is_empty() {
                return Err("unterminated inner list");
            }
            items.push(self.item()?);
            match self.peek() {
                Some(b' ' | b')') => {}
                None => return Err("unterminated inner list"),
                Some(_) => return Err("expected a space or ')' after an inner list item"),
            }
        }
    }

    fn item(&mut self) -> Result<Item, &'static str> {
        let value = self.bare_item()?;
        let params = self.parameters()?;
        Ok(Item { value, params })
    }

    fn parameters(&mut self) -> Result<Parameters, &'static str> {
        let mut params = Parameters::new();
        while self.eat(b';') {
            self.skip_sp();
            let key = self.key()?;
            let value = if self.eat(b'=') { self.bare_item()? } else { BareItem::Boolean(true) };
            if params.iter().any(|(k, _)| *k == key) {
                return Err("duplicate parameter");
            }
            params.push((key, value));
        }
        Ok(params)
    }

    fn bare_item(&mut self) -> Result<BareItem, &'static str> {
        match self.peek() {
            Some(b'-' | b'0'..=b'9') => self.integer(),
            Some(b'"') => self.string(),
            Some(b':') => self.bytes(),
            Some(b'?') => self.boolean(),
            Some(b) if b.is_ascii_alphabetic() || b == b'*' => self.token(),
            Some(_) => Err("unexpected character where a value was expected"),
            None => Err("expected a value"),
        }
    }

    fn integer(&mut self) -> Result<BareItem, &'static str> {
        let negative = self.eat(b'-');
        let digits = self.take_while(|b| b.is_ascii_digit());
        if digits.is_empty() {
            return Err("expected a digit");
        }
        if self.peek() == Some(b'.') {
            return Err("decimals are not supported");
        }
        if digits.len() > 15 {
            return Err("integer longer than 15 digits");
        }
        let magnitude: i64 = digits.parse().map_err(|_| "invalid integer")?;
        debug_assert!(magnitude <= MAX_INTEGER);
        Ok(BareItem::Integer(if negative { -magnitude } else { magnitude }))
    }

    fn string(&mut self) -> Result<BareItem, &'static str> {
        self.pos += 1; // '"'
        let mut out = String::new();
        loop {
            match self.peek() {
                None => return Err("unterminated string"),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(BareItem::String(out));
                }
                Some(b'\\') => {
                    self.pos += 1;
                    match self.peek() {
                        Some(c @ (b'"' | b'\\')) => out.push(char::from(c)),
                        _ => return Err("invalid escape in string"),
                    }
                    self.pos += 1;
                }
                Some(c) if (0x20..=0x7e).contains(&c) => {
                    out.push(char::from(c));
                    self.pos += 1;
                }
                Some(_) => return Err("control character in string"),
            }
        }
    }

    fn token(&mut self) -> Result<BareItem, &'static str> {
        let token = self.take_while(|b| is_tchar(b) || b == b':' || b == b'/');
        Ok(BareItem::Token(token.to_owned()))
    }

    fn bytes(&mut self) -> Result<BareItem, &'static str> {
        self.pos += 1; // ':'
        let encoded = self.take_while(is_base64_char);
        if !self.eat(b':') {
            return Err("unterminated or invalid byte sequence");
        }
        STANDARD
            .decode(encoded)
            .map(BareItem::Bytes)
            .map_err(|_| "byte sequence is not canonical padded base64")
    }

    fn boolean(&mut self) -> Result<BareItem, &'static str> {
        self.pos += 1; // '?'
        if self.eat(b'1') {
            Ok(BareItem::Boolean(true))
        } else if self.eat(b'0') {
            Ok(BareItem::Boolean(false))
        } else {
            Err("invalid boolean")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn string(s: &str) -> BareItem {
        BareItem::String(s.to_owned())
    }

    #[test]
    fn a_signature_input_dictionary_parses_into_an_inner_list_with_parameters() {
        let dict =
            parse_dictionary(r#"sig1=("@method" "a\"b\\c");created=12;keyid="k";x, b=?0"#).unwrap();
        assert_eq!(dict.len(), 2, "two members were given");
        let (label, member) = &dict[0];
        assert_eq!(label, "sig1");
        let Member::InnerList { items, params } = member else { panic!("sig1 is an inner list") };
        assert_eq!(items[0].value, string("@method"));
        assert_eq!(items[1].value, string(r#"a"b\c"#), "escapes are decoded");
        assert_eq!(
            params,
            &vec![
                ("created".to_owned(), BareItem::Integer(12)),
                ("keyid".to_owned(), string("k")),
                ("x".to_owned(), BareItem::Boolean(true)),
            ],
            "parameters keep their order and a bare key is true"
        );
        assert_eq!(
            dict[1].1,
            Member::Item(Item { value: BareItem::Boolean(false), params: vec![] })
        );
    }

    #[test]
    fn serialization_of_a_parsed_inner_list_reproduces_the_canonical_text() {
        let text = r#"("a" "b\"c");n=-5;s="x";t=tok/en:1;f=?0;b=:AQID:;flag"#;
        let dict = parse_dictionary(&format!("k={text}")).unwrap();
        let Member::InnerList { items, params } = &dict[0].1 else { panic!("inner list") };
        let mut out = String::from("(");
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                out.push(' ');
            }
            write_bare_item(&mut out, &item.value);
        }
        out.push(')');
        write_parameters(&mut out, params);
        assert_eq!(out, text, "parse then serialize is the identity on canonical input");
    }

    #[test]
    fn malformed_dictionaries_are_rejected_with_a_specific_reason() {
        let cases: &[(&str, &str)] = &[
            ("", "empty dictionary"),
            ("a=1,", "trailing comma"),
            ("a=1 b=2", "expected a comma between dictionary members"),
            ("a=1, a=2", "duplicate dictionary key"),
            ("a=1;p=1;p=2", "duplicate parameter"),
            ("A=1", "expected a key"),
            ("a=1.5", "decimals are not supported"),
            ("a=1234567890123456", "integer longer than 15 digits"),
            ("a=\"unterminated", "unterminated string"),
            ("a=\"bad\\escape\"", "invalid escape in string"),
            ("a=:AQID", "unterminated or invalid byte sequence"),
            ("a=:AQI:", "byte sequence is not canonical padded base64"),
            ("a=(\"x\"", "unterminated inner list"),
            ("a=(\"x\"\"y\")", "expected a space or ')' after an inner list item"),
            ("a=?2", "invalid boolean"),
            ("a=é", "non-ASCII or control character"),
            ("a=\u{7}", "non-ASCII or control character"),
        ];
        for (input, reason) in cases {
            assert_eq!(parse_dictionary(input), Err(*reason), "input {input:?}");
        }
    }

    #[test]
    fn keys_and_strings_are_validated_as_rfc_8941_defines_them() {
        assert!(is_key("sig-b26") && is_key("*x") && is_key("lk"), "lowercase keys are valid");
        assert!(!is_key("Sig") && !is_key("") && !is_key("1a"), "uppercase/empty/digit-first");
        assert!(is_string("a \"b\" ~"), "printable ASCII is a valid string");
        assert!(!is_string("a\tb") && !is_string("é"), "controls and non-ASCII are not");
    }
}
