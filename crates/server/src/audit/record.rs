//! The canonical record and the chain hash (`docs/protocol.md`, "Audit log").

use std::fmt::{self, Write as _};

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{AuditEvent, Decision};

/// Domain label of the chain hash.
pub const CHAIN_LABEL: &[u8] = b"latchkey audit v1\0";

/// The `prev_hash` of every chain's first record.
pub const GENESIS_HASH: [u8; 32] = [0; 32];

/// Version of the record format, stored as the record's `v`.
pub(crate) const RECORD_VERSION: u64 = 1;

/// Longest recorded path, in bytes; longer paths are cut at a character boundary.
const MAX_PATH_BYTES: usize = 2048;
/// Longest other recorded string, in bytes.
const MAX_TEXT_BYTES: usize = 256;
/// Most policy ids recorded.
const MAX_POLICY_IDS: usize = 64;

/// `SHA-256(CHAIN_LABEL || prev_hash || record)`.
pub fn chain_hash(prev_hash: &[u8; 32], record: &[u8]) -> [u8; 32] {
    Sha256::new()
        .chain_update(CHAIN_LABEL)
        .chain_update(prev_hash)
        .chain_update(record)
        .finalize()
        .into()
}

/// The canonical record of `event` at position `seq`: the exact text that is stored and hashed.
///
/// Absent optional fields and an empty `policy_ids` are left out. The path loses its query string
/// and fragment, the host any user info, and long strings are cut (see the protocol document).
pub fn canonical_record(event: &AuditEvent, seq: u64) -> String {
    PreparedRecord::new(event).with_seq(seq)
}

/// An event's canonical record with its `seq` still to be filled in: everything that does not
/// depend on the record's place in the chain, done before that place is known (the audit
/// journal prepares records outside its lock and only numbers them inside).
#[derive(Debug, Clone)]
pub(crate) struct PreparedRecord {
    /// The canonical record with nothing after `"seq":`.
    text: String,
    /// Where the seq's digits go.
    seq_at: usize,
}

/// The key the seq goes under.
const SEQ_KEY: &str = "seq";

impl PreparedRecord {
    pub(crate) fn new(event: &AuditEvent) -> Self {
        // The fields in the canonical order, which for these keys (ASCII lowercase and `_`) is
        // plain byte order; absent ones are skipped. Written straight into the text: this runs
        // twice for every proxied call, so no map, no per-field strings and no sort.
        let mut out = Fields { text: String::with_capacity(512), empty: true };
        out.text.push('{');
        out.display("agent", event.agent);
        out.text("approval_id", event.approval_id.as_deref());
        out.number("at_ms", Some(event.at_ms));
        out.number("attempt_seq", event.attempt_seq);
        out.text("client_ip", event.client_ip.as_deref());
        out.text("command", event.command.as_deref());
        out.text("credential_name", event.credential_name.as_deref());
        out.text("decision", event.decision.map(Decision::as_str));
        out.display("device", event.device);
        out.text("host", event.host.as_deref().map(strip_userinfo));
        out.text("kind", Some(event.kind.as_str()));
        out.number("latency_ms", event.latency_ms);
        out.number("lifetime_secs", event.lifetime_secs);
        out.display("member", event.member);
        out.text("method", event.method.as_deref());
        out.cut_text("path", event.path.as_deref().map(strip_query), MAX_PATH_BYTES);
        if !event.policy_ids.is_empty() {
            out.key("policy_ids");
            out.text.push('[');
            for (i, id) in event.policy_ids.iter().take(MAX_POLICY_IDS).enumerate() {
                if i > 0 {
                    out.text.push(',');
                }
                write_string(cut(id, MAX_TEXT_BYTES), &mut out.text);
            }
            out.text.push(']');
        }
        out.text("reason_code", event.reason_code.as_deref());
        out.key(SEQ_KEY);
        let seq_at = out.text.len();
        out.text("subject", event.subject.as_deref());
        out.number("upstream_status", event.upstream_status.map(u64::from));
        out.number("v", Some(RECORD_VERSION));
        out.display("workspace", Some(event.workspace));
        out.text.push('}');
        Self { text: out.text, seq_at }
    }

    /// The text before and after where the seq's digits go.
    pub(crate) fn split(&self) -> (&str, &str) {
        self.text.split_at(self.seq_at)
    }

    /// The canonical record at position `seq`.
    pub(crate) fn with_seq(&self, seq: u64) -> String {
        let digits = seq.to_string();
        let mut record = String::with_capacity(self.text.len() + digits.len());
        record.push_str(&self.text[..self.seq_at]);
        record.push_str(&digits);
        record.push_str(&self.text[self.seq_at..]);
        record
    }
}

/// A canonical record being written, one `"key":value` member after another.
struct Fields {
    text: String,
    empty: bool,
}

impl Fields {
    fn key(&mut self, key: &str) {
        if !std::mem::take(&mut self.empty) {
            self.text.push(',');
        }
        write_string(key, &mut self.text);
        self.text.push(':');
    }

    fn text(&mut self, key: &str, value: Option<&str>) {
        self.cut_text(key, value, MAX_TEXT_BYTES);
    }

    fn cut_text(&mut self, key: &str, value: Option<&str>, max: usize) {
        if let Some(value) = value {
            self.key(key);
            write_string(cut(value, max), &mut self.text);
        }
    }

    fn number(&mut self, key: &str, value: Option<u64>) {
        if let Some(value) = value {
            self.key(key);
            // Writing into a String cannot fail.
            let _ = write!(self.text, "{value}");
        }
    }

    /// An id, as the string its `Display` writes.
    fn display(&mut self, key: &str, value: Option<impl fmt::Display>) {
        if let Some(value) = value {
            self.key(key);
            self.text.push('"');
            // Escaped like any string, though ids never need it; writing cannot fail.
            let _ = write!(Escaping(&mut self.text), "{value}");
            self.text.push('"');
        }
    }
}

/// Escapes what is written through it into the string, as inside a JSON string.
struct Escaping<'a>(&'a mut String);

impl fmt::Write for Escaping<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        escape_into(s, self.0);
        Ok(())
    }
}

/// `value` as canonical JSON: object keys sorted by their UTF-16 code units, no whitespace,
/// strings escaped minimally (`\"`, `\\`, `\b`, `\f`, `\n`, `\r`, `\t`, other control characters
/// as `\u00xx`, everything else as UTF-8), integers in plain decimal. This is RFC 8785 (JCS) for
/// every value an audit record holds.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

/// Lowercase hex.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    out
}

/// 32 bytes from 64 lowercase hex digits.
pub fn from_hex(text: &str) -> Option<[u8; 32]> {
    let digits = text.as_bytes();
    if digits.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

fn nibble(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        _ => None,
    }
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|(a, _), (b, _)| a.encode_utf16().cmp(b.encode_utf16()));
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(key, out);
                out.push(':');
                write_canonical(item, out);
            }
            out.push('}');
        }
    }
}

fn write_string(s: &str, out: &mut String) {
    out.push('"');
    escape_into(s, out);
    out.push('"');
}

/// `s` with what JSON strings must escape escaped, and nothing else (as serde_json writes
/// strings). Runs of bytes that need no escape are copied whole: every byte that does is ASCII,
/// so each run starts and ends at a character boundary.
pub(crate) fn escape_into(s: &str, out: &mut String) {
    // Room for an escaped quote every eight bytes, about what records hold; more grows it.
    out.reserve(s.len() + s.len() / 8);
    let mut run = 0;
    for (at, byte) in s.bytes().enumerate() {
        if !needs_escape(byte) {
            continue;
        }
        out.push_str(&s[run..at]);
        run = at + 1;
        match byte {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            0x08 => out.push_str("\\b"),
            0x0c => out.push_str("\\f"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            control => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.push_str("\\u00");
                out.push(char::from(HEX[usize::from(control >> 4)]));
                out.push(char::from(HEX[usize::from(control & 0xf)]));
            }
        }
    }
    out.push_str(&s[run..]);
}

/// Whether JSON needs `byte` escaped in a string: a quote, a backslash or a control character.
fn needs_escape(byte: u8) -> bool {
    /// One load per byte instead of three comparisons, on the path every audit record takes.
    const ESCAPED: [bool; 256] = {
        let mut table = [false; 256];
        let mut byte = 0;
        while byte < 0x20 {
            table[byte] = true;
            byte += 1;
        }
        table[b'"' as usize] = true;
        table[b'\\' as usize] = true;
        table
    };
    ESCAPED[usize::from(byte)]
}

/// The longest prefix of `s` of at most `max` bytes that ends at a character boundary.
fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Serializes a path as it is recorded: without query string or fragment.
pub(crate) fn serialize_path<S: serde::Serializer>(
    path: &Option<String>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serde::Serialize::serialize(&path.as_deref().map(strip_query), serializer)
}

/// Serializes a host as it is recorded: without user info.
pub(crate) fn serialize_host<S: serde::Serializer>(
    host: &Option<String>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serde::Serialize::serialize(&host.as_deref().map(strip_userinfo), serializer)
}

/// The path without query string or fragment, where some APIs carry keys.
fn strip_query(path: &str) -> &str {
    path.split(['?', '#']).next().unwrap_or_default()
}

/// The host without `user:password@`.
fn strip_userinfo(host: &str) -> &str {
    host.rsplit('@').next().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{Map, json};

    #[test]
    fn canonical_json_sorts_keys_and_escapes_minimally() {
        let value = json!({"b": 1, "a": [true, null, "x\"\\\n\u{1}é"], "A": {"z": 2, "y": 3}});
        assert_eq!(
            canonical_json(&value),
            r#"{"A":{"y":3,"z":2},"a":[true,null,"x\"\\\n\u0001é"],"b":1}"#,
            "keys sorted by code unit, no whitespace, control characters as \\u00xx"
        );
    }

    #[test]
    fn canonical_json_of_a_parsed_canonical_text_is_that_text() {
        let text = r#"{"a":"\u001f\t/é","b":[18446744073709551615,0]}"#;
        let parsed: Value = serde_json::from_str(text).expect("valid JSON");
        assert_eq!(canonical_json(&parsed), text, "re-canonicalising must be the identity");
    }

    /// The record as first defined: every present field put into a JSON object, which is then
    /// canonicalised. Records are written without building the object; chains already stored
    /// were hashed over this spelling, so the two must never differ.
    fn reference_record(event: &AuditEvent, seq: u64) -> String {
        let text = |s: &str| Value::from(cut(s, MAX_TEXT_BYTES));
        let mut map = Map::new();
        map.insert("v".into(), RECORD_VERSION.into());
        map.insert("seq".into(), seq.into());
        map.insert("workspace".into(), event.workspace.to_string().into());
        map.insert("at_ms".into(), event.at_ms.into());
        map.insert("kind".into(), event.kind.as_str().into());
        let mut put = |key: &str, value: Option<Value>| {
            if let Some(value) = value {
                map.insert(key.into(), value);
            }
        };
        put("decision", event.decision.map(|d| d.as_str().into()));
        put("reason_code", event.reason_code.as_deref().map(text));
        put("agent", event.agent.map(|id| id.to_string().into()));
        put("device", event.device.map(|id| id.to_string().into()));
        put("member", event.member.map(|id| id.to_string().into()));
        put("credential_name", event.credential_name.as_deref().map(text));
        put("method", event.method.as_deref().map(text));
        put("host", event.host.as_deref().map(|host| text(strip_userinfo(host))));
        put(
            "path",
            event.path.as_deref().map(|path| cut(strip_query(path), MAX_PATH_BYTES).into()),
        );
        if !event.policy_ids.is_empty() {
            let ids = event.policy_ids.iter().take(MAX_POLICY_IDS).map(|id| text(id)).collect();
            put("policy_ids", Some(Value::Array(ids)));
        }
        put("approval_id", event.approval_id.as_deref().map(text));
        put("attempt_seq", event.attempt_seq.map(Value::from));
        put("upstream_status", event.upstream_status.map(Value::from));
        put("latency_ms", event.latency_ms.map(Value::from));
        put("client_ip", event.client_ip.as_deref().map(text));
        put("lifetime_secs", event.lifetime_secs.map(Value::from));
        put("command", event.command.as_deref().map(text));
        put("subject", event.subject.as_deref().map(text));
        canonical_json(&Value::Object(map))
    }

    /// Strings that need escaping, multi-byte characters on the cut boundaries, and lengths on
    /// both sides of every limit.
    fn field() -> impl Strategy<Value = Option<String>> {
        proptest::option::of(prop_oneof![
            "[a-z_./:@?#-]{0,40}",
            "(?s)[\\\"\\\\\\x00-\\x1f\\x7f a-zé€😀]{0,300}",
            "[é]{120,140}",
            "[a/]{2040,2060}",
        ])
    }

    fn event() -> impl Strategy<Value = AuditEvent> {
        use super::super::AuditKind as K;
        use latchkey_core::ids::{AgentId, DeviceId, MemberId, WorkspaceId};
        let kinds = prop_oneof![
            Just(K::ProxyAttempt),
            Just(K::ProxyOutcome),
            Just(K::InjectReleased),
            Just(K::PolicyChanged),
            Just(K::WorkspaceCreated),
            Just(K::ApprovalAnswered),
        ];
        let decision =
            proptest::option::of(prop_oneof![Just(Decision::Allowed), Just(Decision::Denied)]);
        let ids = (any::<bool>(), any::<bool>(), any::<bool>());
        let strings =
            (field(), field(), field(), field(), field(), field(), field(), field(), field());
        let numbers = (
            any::<u64>(),
            proptest::option::of(any::<u64>()),
            proptest::option::of(any::<u16>()),
            proptest::option::of(any::<u64>()),
            proptest::option::of(any::<u64>()),
        );
        let policies = proptest::collection::vec("[a-z\\\"é]{0,300}", 0..70);
        (kinds, decision, ids, strings, numbers, policies).prop_map(
            |(kind, decision, (agent, device, member), strings, numbers, policy_ids)| {
                let (reason, credential, method, host, path, approval, ip, command, subject) =
                    strings;
                let (at_ms, attempt_seq, upstream_status, latency_ms, lifetime_secs) = numbers;
                let mut event = AuditEvent::new(WorkspaceId::random(), at_ms, kind);
                event.decision = decision;
                event.agent = agent.then(AgentId::random);
                event.device = device.then(DeviceId::random);
                event.member = member.then(MemberId::random);
                event.reason_code = reason;
                event.credential_name = credential;
                event.method = method;
                event.host = host;
                event.path = path;
                event.approval_id = approval;
                event.client_ip = ip;
                event.command = command;
                event.subject = subject;
                event.policy_ids = policy_ids;
                event.attempt_seq = attempt_seq;
                event.upstream_status = upstream_status;
                event.latency_ms = latency_ms;
                event.lifetime_secs = lifetime_secs;
                event
            },
        )
    }

    /// `s` as a JSON string by [`escape_into`] and by serde_json: (ours, theirs).
    fn both_escapings(s: &str) -> (String, String) {
        let mut ours = String::from("\"");
        escape_into(s, &mut ours);
        ours.push('"');
        (ours, serde_json::to_string(s).expect("a string serialises"))
    }

    proptest! {
        #[test]
        fn strings_are_escaped_as_serde_json_escapes_them(s in "(?s).{0,64}") {
            let (ours, theirs) = both_escapings(&s);
            prop_assert_eq!(ours, theirs, "journal lines are read back by serde_json");
        }

        #[test]
        fn escapes_between_multibyte_characters_are_written_as_serde_json_writes_them(
            s in "[\\x00-\\x1f\"\\\\a\u{e9}\u{20ac}\u{1f600}]{0,64}"
        ) {
            let (ours, theirs) = both_escapings(&s);
            prop_assert_eq!(
                ours, theirs,
                "runs copied whole between escapes must keep every character and escape each \
                 control character, quote and backslash"
            );
        }
    }

    proptest! {
        #[test]
        fn written_records_are_byte_identical_to_the_canonicalised_object(
            event in event(),
            seq in any::<u64>(),
        ) {
            prop_assert_eq!(
                canonical_record(&event, seq),
                reference_record(&event, seq),
                "a record written field by field must be the canonical JSON of its object"
            );
        }
    }

    #[test]
    fn a_prepared_record_numbered_later_is_the_canonical_record_with_that_seq() {
        use latchkey_core::ids::{AgentId, WorkspaceId};

        let workspace = WorkspaceId::random();
        let bare = AuditEvent::new(
            workspace,
            1_800_000_000_000,
            super::super::AuditKind::WorkspaceCreated,
        );
        let mut full = AuditEvent::new(workspace, 1, super::super::AuditKind::ProxyOutcome);
        full.decision = Some(super::super::Decision::Denied);
        // Keys on both sides of "seq" in sorted order, and strings that need escaping.
        full.reason_code = Some("policy_denied\"seq\":1".into());
        full.upstream_status = Some(502);
        full.agent = Some(AgentId::random());
        full.path = Some("/x/\u{1}é?token=secret".into());
        full.policy_ids = vec!["p1".into(), "seq".into()];
        full.attempt_seq = Some(7);
        for event in [&bare, &full] {
            let prepared = PreparedRecord::new(event);
            for seq in [1, 9, 10, 4_294_967_296, u64::MAX] {
                let record = prepared.with_seq(seq);
                let parsed: Value = serde_json::from_str(&record).expect("the record is JSON");
                assert_eq!(parsed["seq"], Value::from(seq), "the seq is the number filled in");
                assert_eq!(
                    canonical_json(&parsed),
                    record,
                    "the record is canonical, the seq's key in its sorted place (seq {seq})"
                );
                assert_eq!(record, canonical_record(event, seq), "one spelling of a record");
            }
        }
        assert!(
            !canonical_record(&full, 3).contains("secret"),
            "the query string is still left out"
        );
    }

    #[test]
    fn hex_round_trips_and_refuses_uppercase_and_wrong_lengths() {
        let bytes: [u8; 32] = core::array::from_fn(|i| u8::try_from(i * 8).expect("small"));
        assert_eq!(from_hex(&to_hex(&bytes)), Some(bytes), "round trip");
        assert_eq!(from_hex(&to_hex(&bytes).to_uppercase()), None, "one spelling only");
        assert_eq!(from_hex("00"), None, "32 bytes only");
    }

    #[test]
    fn recorded_strings_are_cut_at_character_boundaries() {
        let long = "é".repeat(200);
        let cut_text = cut(&long, MAX_TEXT_BYTES);
        assert_eq!(cut_text.len(), MAX_TEXT_BYTES, "256 bytes is 128 two-byte characters");
        assert_eq!(cut("aé", 2), "a", "never splits a character");
    }

    #[test]
    fn a_serialized_event_carries_no_query_or_userinfo_either() {
        let mut event = AuditEvent::new(
            latchkey_core::ids::WorkspaceId::random(),
            1,
            crate::audit::AuditKind::ProxyAttempt,
        );
        event.path = Some("/x?key=canary".into());
        event.host = Some("u:canary@h.example".into());
        let json = serde_json::to_string(&event).expect("serializes");
        assert!(!json.contains("canary"), "serialized events are as safe as records: {json}");
    }

    #[test]
    fn paths_lose_queries_and_fragments_and_hosts_lose_userinfo() {
        assert_eq!(strip_query("/v1/x?api_key=secret#frag"), "/v1/x");
        assert_eq!(strip_query("/v1/x#a?b"), "/v1/x");
        assert_eq!(strip_userinfo("user:pw@api.example.com"), "api.example.com");
        assert_eq!(strip_userinfo("api.example.com"), "api.example.com");
    }
}
