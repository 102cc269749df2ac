//! Progress updates (compat §4.3): the JSON a plugin posts, how the server decodes it, and the
//! v0.57 append rule that merges an appending update into the stored one. What one key keeps is
//! bounded (message length, item length, entries of its lists and their bytes) whatever clients
//! send, with a note in the shown message when something was cut, and counters saturate instead
//! of wrapping. The bounds already hold while a body is decoded: a megabyte of empty strings
//! never becomes a vector of a third of a million of them.

use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::gojson::key_matches;

/// A progress update as stored and as shown in the status. `name`, `node` and `timestamp` are
/// always set by the server.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgressUpdate {
    pub name: String,
    pub node: String,
    pub timestamp: String,
    pub msg: String,
    pub total: i64,
    pub completed: i64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub appendtotals: bool,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub appendcompleted: i64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub appendfailing: Vec<String>,
    /// List items not kept because of the bounds; said in the shown message.
    #[serde(skip)]
    pub dropped: u64,
}

/// Longest `msg` kept, in bytes.
pub const MAX_MSG_BYTES: usize = 4 << 10;
/// Longest single error or failure name kept, in bytes.
pub const MAX_ITEM_BYTES: usize = 1 << 10;
/// Bytes of errors, failures and pending appends one key keeps, together, each entry charged
/// [`ENTRY_OVERHEAD`] beyond its text.
pub const MAX_LIST_BYTES: usize = 64 << 10;
/// What one list entry is charged beyond its text: about what a kept string costs in memory
/// (its header and the allocator's rounding). Charging text alone let 65,536 one-byte failures
/// cost a key megabytes, and empty strings cost nothing at all.
pub const ENTRY_OVERHEAD: usize = 48;

/// Cuts `s` to at most `max` bytes on a character boundary, saying so.
fn cut(s: &mut String, max: usize) {
    if s.len() > max {
        let full = s.len();
        cut_noting(s, full, max);
    }
}

/// Cuts `s`, the start of a text `full` bytes long, to at most `max` bytes with the note.
fn cut_noting(s: &mut String, full: usize, max: usize) {
    let end = crate::floor_char_boundary(s, max.saturating_sub(40));
    s.truncate(end);
    s.push_str(&format!("... [cut from {full} bytes]"));
}

fn is_false(b: &bool) -> bool {
    !*b
}
fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// What a client may send. Unknown fields are ignored and `null` means "not given", as in Go;
/// `name`, `node` and `timestamp` are accepted and discarded. The message and every list are
/// already within the per-key bounds; `dropped` counts the entries that were not kept.
#[derive(Debug, Clone, Default)]
pub struct ProgressInput {
    pub msg: String,
    pub total: i64,
    pub completed: i64,
    pub errors: Vec<String>,
    pub failures: Vec<String>,
    pub appendtotals: bool,
    pub appendcompleted: i64,
    pub appendfailing: Vec<String>,
    pub dropped: u64,
}

/// The fields of [`ProgressInput`], in the order [`InputVisitor`] numbers them.
const FIELDS: &[&str] = &[
    "msg",
    "total",
    "completed",
    "errors",
    "failures",
    "appendtotals",
    "appendcompleted",
    "appendfailing",
];

/// A string cut to `max` bytes as it is read (with the cut noted), so a megabyte-long one is
/// never copied whole. JSON `null` reads as empty, as Go leaves a string it cannot set.
struct BoundedStr(usize);

impl<'de> DeserializeSeed<'de> for BoundedStr {
    type Value = String;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        d.deserialize_any(self)
    }
}

impl Visitor<'_> for BoundedStr {
    type Value = String;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        if v.len() <= self.0 {
            return Ok(v.to_owned());
        }
        let mut kept = v[..crate::floor_char_boundary(v, self.0)].to_owned();
        cut_noting(&mut kept, v.len(), self.0);
        Ok(kept)
    }
    fn visit_unit<E: de::Error>(self) -> Result<String, E> {
        Ok(String::new())
    }
}

/// A list of strings kept within [`MAX_LIST_BYTES`] (entries charged as in
/// [`ProgressUpdate::merge`]) as it is read; later entries are checked for their type and
/// counted, not kept. `None` for JSON `null`.
struct BoundedList;

impl<'de> DeserializeSeed<'de> for BoundedList {
    type Value = Option<(Vec<String>, u64)>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for BoundedList {
    type Value = Option<(Vec<String>, u64)>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of strings")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut kept = Vec::new();
        let mut budget = MAX_LIST_BYTES;
        let mut dropped = 0u64;
        while let Some(item) = seq.next_element_seed(BoundedStr(MAX_ITEM_BYTES))? {
            let cost = item.len() + ENTRY_OVERHEAD;
            if dropped == 0 && cost <= budget {
                budget -= cost;
                kept.push(item);
            } else {
                dropped += 1;
            }
        }
        Ok(Some((kept, dropped)))
    }
}

/// Reads one progress object field by field, the way Go decodes into a struct (see
/// [`crate::gojson`]): keys match case-insensitively, a later key wins, `null` changes nothing,
/// unknown keys are skipped unread, a value of the wrong type is an error.
struct InputVisitor;

impl<'de> Visitor<'de> for InputVisitor {
    type Value = ProgressInput;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_unit<E: de::Error>(self) -> Result<ProgressInput, E> {
        Ok(ProgressInput::default())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<ProgressInput, A::Error> {
        let mut out = ProgressInput::default();
        // Entries dropped from each list; a repeated key replaces its list and its count.
        let mut dropped = [0u64; 3];
        while let Some(key) = m.next_key::<KeyName>()? {
            let field = FIELDS.iter().position(|f| key_matches(&key.0, f));
            let (list, slot) = match field {
                None => {
                    m.next_value::<IgnoredAny>()?;
                    continue;
                }
                Some(0) => {
                    if let Some(v) = m.next_value_seed(OrNull(BoundedStr(MAX_MSG_BYTES)))? {
                        out.msg = v;
                    }
                    continue;
                }
                Some(1) | Some(2) | Some(6) => {
                    if let Some(v) = m.next_value::<Option<i64>>()? {
                        match field {
                            Some(1) => out.total = v,
                            Some(2) => out.completed = v,
                            _ => out.appendcompleted = v,
                        }
                    }
                    continue;
                }
                Some(5) => {
                    if let Some(v) = m.next_value::<Option<bool>>()? {
                        out.appendtotals = v;
                    }
                    continue;
                }
                Some(3) => (&mut out.errors, 0),
                Some(4) => (&mut out.failures, 1),
                _ => (&mut out.appendfailing, 2),
            };
            if let Some((v, d)) = m.next_value_seed(BoundedList)? {
                *list = v;
                dropped[slot] = d;
            }
        }
        out.dropped = dropped.iter().sum();
        Ok(out)
    }
}

/// An object key, read whole (keys are matched against field names).
struct KeyName(String);

impl<'de> Deserialize<'de> for KeyName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(KeyName)
    }
}

/// `seed`, or `None` for JSON `null`.
struct OrNull<S>(S);

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for OrNull<S> {
    type Value = Option<S::Value>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        struct V<S>(S);
        impl<'de, S: DeserializeSeed<'de>> Visitor<'de> for V<S> {
            type Value = Option<S::Value>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a value or null")
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                self.0.deserialize(d).map(Some)
            }
        }
        d.deserialize_option(V(self.0))
    }
}

/// The whole body's one object (or `null`).
struct Wire(ProgressInput);

impl<'de> Deserialize<'de> for Wire {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(InputVisitor).map(Wire)
    }
}

/// Why a progress body was refused (answered with 400).
#[derive(Debug, thiserror::Error)]
#[error("unable to decode body: {0}")]
pub struct ProgressDecodeError(String);

impl ProgressInput {
    /// Decodes the first JSON value of `body`, ignoring anything after it, as Go's streaming
    /// decoder does, with Go's key matching (`{"MSG":"x"}` sets `msg`; see `gojson`). An empty
    /// body is an error (`EOF`).
    pub fn decode(body: &[u8]) -> Result<Self, ProgressDecodeError> {
        let mut stream = serde_json::Deserializer::from_slice(body).into_iter::<Wire>();
        match stream.next() {
            None => Err(ProgressDecodeError("EOF".into())),
            Some(Ok(Wire(input))) => Ok(input),
            Some(Err(e)) if e.is_eof() => Err(ProgressDecodeError("EOF".into())),
            Some(Err(e)) => Err(ProgressDecodeError(e.to_string())),
        }
    }

    /// Turns the input into an update for `plugin` on `node` at `timestamp`; the server's values
    /// always win over the client's.
    pub fn into_update(self, plugin: &str, node: &str, timestamp: String) -> ProgressUpdate {
        ProgressUpdate {
            name: plugin.to_string(),
            node: node.to_string(),
            timestamp,
            msg: self.msg,
            total: self.total,
            completed: self.completed,
            errors: self.errors,
            failures: self.failures,
            appendtotals: self.appendtotals,
            appendcompleted: self.appendcompleted,
            appendfailing: self.appendfailing,
            dropped: self.dropped,
        }
    }
}

impl ProgressUpdate {
    /// An update is appending when it asks to add to the stored counters rather than replace them.
    pub fn is_appending(&self) -> bool {
        self.appendtotals || !self.appendfailing.is_empty() || self.appendcompleted > 0
    }

    /// Applies `next` to the stored update `prev` (compat §4.3) and returns the new stored
    /// value, within the bounds.
    pub fn merge(prev: Option<&ProgressUpdate>, next: ProgressUpdate) -> ProgressUpdate {
        let mut out = Self::merge_unbounded(prev, next);
        out.bound();
        out
    }

    /// Keeps the update within the per-key bounds: a long message or item is cut, and list
    /// items past [`MAX_LIST_BYTES`] are dropped and counted.
    fn bound(&mut self) {
        cut(&mut self.msg, MAX_MSG_BYTES);
        let mut budget = MAX_LIST_BYTES;
        let mut dropped = 0u64;
        for list in [
            &mut self.errors,
            &mut self.failures,
            &mut self.appendfailing,
        ] {
            let mut keep = 0;
            for item in list.iter_mut() {
                cut(item, MAX_ITEM_BYTES);
                let cost = item.len() + ENTRY_OVERHEAD;
                if cost > budget {
                    break;
                }
                budget -= cost;
                keep += 1;
            }
            dropped += (list.len() - keep) as u64;
            list.truncate(keep);
        }
        self.dropped = self.dropped.saturating_add(dropped);
    }

    fn merge_unbounded(prev: Option<&ProgressUpdate>, next: ProgressUpdate) -> ProgressUpdate {
        if !next.is_appending() {
            return next;
        }
        let base = prev.cloned().unwrap_or_default();
        let base_appending = base.is_appending();
        let mut out = ProgressUpdate {
            name: next.name.clone(),
            node: next.node.clone(),
            timestamp: next.timestamp.clone(),
            msg: next.msg.clone(),
            ..base
        };
        out.dropped = out.dropped.saturating_add(next.dropped);
        if !base_appending {
            out.completed = out.completed.saturating_add(next.appendcompleted);
            if next.appendtotals {
                let failing = i64::try_from(next.appendfailing.len()).unwrap_or(i64::MAX);
                out.total = out
                    .total
                    .saturating_add(next.appendcompleted)
                    .saturating_add(failing);
            }
            out.failures.extend(next.appendfailing);
        } else {
            out.appendcompleted = out.appendcompleted.saturating_add(next.appendcompleted);
            out.appendfailing.extend(next.appendfailing);
            out.appendtotals = next.appendtotals;
        }
        out
    }

    /// The form shown in the status: the append fields are never copied there, and items
    /// dropped by the bounds are noted in the message.
    pub fn for_status(&self) -> ProgressUpdate {
        let mut msg = self.msg.clone();
        if self.dropped > 0 {
            msg.push_str(&format!(
                " [{} error/failure entries not kept: a progress key keeps at most {} bytes of them]",
                self.dropped, MAX_LIST_BYTES
            ));
        }
        ProgressUpdate {
            msg,
            appendtotals: false,
            appendcompleted: 0,
            appendfailing: Vec::new(),
            dropped: 0,
            ..self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upd(json: &str) -> ProgressUpdate {
        ProgressInput::decode(json.as_bytes())
            .unwrap()
            .into_update("p", "n", "t".into())
    }

    #[test]
    fn append_sequence_follows_the_merge_rule() {
        let mut s = ProgressUpdate::merge(None, upd(r#"{"msg":"hi","appendtotals":true}"#));
        assert_eq!((s.msg.as_str(), s.total, s.completed), ("hi", 0, 0));
        assert!(!s.is_appending(), "append fields are never stored");
        s = ProgressUpdate::merge(
            Some(&s),
            upd(r#"{"appendcompleted":3,"appendfailing":["foo"]}"#),
        );
        // Without appendtotals only completed and failures move.
        assert_eq!(
            (s.total, s.completed, s.failures.clone()),
            (0, 3, vec!["foo".to_string()])
        );
        let mut plain = ProgressUpdate::merge(None, upd(r#"{"msg":"hi"}"#));
        plain = ProgressUpdate::merge(
            Some(&plain),
            upd(r#"{"appendtotals":true,"appendcompleted":3,"appendfailing":["foo"]}"#),
        );
        assert_eq!(
            (plain.total, plain.completed, plain.failures.clone()),
            (4, 3, vec!["foo".to_string()])
        );
        plain = ProgressUpdate::merge(
            Some(&plain),
            upd(r#"{"appendtotals":true,"appendcompleted":4}"#),
        );
        assert_eq!((plain.total, plain.completed), (8, 7));
        plain = ProgressUpdate::merge(
            Some(&plain),
            upd(r#"{"appendtotals":true,"appendcompleted":5,"appendfailing":["bar"]}"#),
        );
        assert_eq!((plain.total, plain.completed), (14, 12));
        assert_eq!(plain.failures, vec!["foo", "bar"]);
    }

    #[test]
    fn what_a_key_keeps_is_bounded_and_the_cut_is_noted() {
        let big = "f".repeat(MAX_ITEM_BYTES * 3);
        let body = serde_json::json!({"msg": "m".repeat(1 << 20), "appendfailing": vec![big; 100]});
        let mut s = ProgressUpdate::merge(None, upd(r#"{"msg":"start"}"#));
        for _ in 0..120 {
            s = ProgressUpdate::merge(Some(&s), upd(&body.to_string()));
        }
        let kept: usize = s.failures.iter().map(String::len).sum();
        assert!(kept <= MAX_LIST_BYTES, "{kept}");
        assert!(s.msg.len() <= MAX_MSG_BYTES && s.msg.contains("[cut from 1048576 bytes]"));
        assert!(s.failures.iter().all(|f| f.len() <= MAX_ITEM_BYTES));
        assert_eq!(s.failures.len() as u64 + s.dropped, 120 * 100);
        let shown = s.for_status();
        assert!(shown.msg.contains("entries not kept"), "{}", shown.msg);
    }

    #[test]
    fn counters_saturate() {
        let mut s = ProgressUpdate::merge(None, upd(r#"{"msg":"x"}"#));
        let max = format!(r#"{{"appendcompleted":{},"appendtotals":true}}"#, i64::MAX);
        s = ProgressUpdate::merge(Some(&s), upd(&max));
        s = ProgressUpdate::merge(Some(&s), upd(&max));
        assert_eq!((s.completed, s.total), (i64::MAX, i64::MAX));
    }

    #[test]
    fn non_appending_update_resets_then_appends() {
        let s = ProgressUpdate::merge(None, upd(r#"{"total":33,"completed":33}"#));
        let s = ProgressUpdate::merge(
            Some(&s),
            upd(r#"{"appendcompleted":4,"appendtotals":true}"#),
        );
        assert_eq!((s.total, s.completed), (37, 37));
    }

    #[test]
    fn decoding_is_lenient_like_go() {
        let u = upd(
            r#"{"msg":"foo","name":"spoof","node":"spoof","unknown":1,"errors":null} trailing"#,
        );
        assert_eq!(
            (u.msg.as_str(), u.name.as_str(), u.node.as_str()),
            ("foo", "p", "n")
        );
        let err = ProgressInput::decode(b"").unwrap_err().to_string();
        assert!(err.contains("unable to decode body: EOF"), "{err}");
        assert!(ProgressInput::decode(b"{\"total\":\"x\"}").is_err());
        assert!(ProgressInput::decode(b"  ").is_err());
        // Go matches keys case-insensitively, and a JSON null decodes as an empty update.
        let u = upd(r#"{"MSG":"loud","Completed":3,"appendFailing":["a"]}"#);
        assert_eq!((u.msg.as_str(), u.completed), ("loud", 3));
        assert_eq!(u.appendfailing, ["a"]);
        assert_eq!(upd("null").msg, "");
    }

    #[test]
    fn status_form_omits_append_fields_and_empty_lists() {
        let u = upd(r#"{"msg":"m","appendcompleted":2}"#).for_status();
        let v = serde_json::to_value(&u).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"name":"p","node":"n","timestamp":"t","msg":"m","total":0,"completed":0})
        );
    }

    /// What a list costs as the bounds count it.
    fn charged(list: &[String]) -> usize {
        list.iter().map(|i| i.len() + ENTRY_OVERHEAD).sum()
    }

    #[test]
    fn entries_are_bounded_by_count_too_while_decoding_and_across_appends() {
        let empties = format!(r#"{{"appendfailing":[{}""]}}"#, "\"\",".repeat(340_000));
        let one = ProgressInput::decode(empties.as_bytes()).unwrap();
        assert!(charged(&one.appendfailing) <= MAX_LIST_BYTES);
        assert_eq!(one.appendfailing.len(), MAX_LIST_BYTES / ENTRY_OVERHEAD);
        assert_eq!(one.appendfailing.len() as u64 + one.dropped, 340_001);

        let mut s = ProgressUpdate::merge(None, upd(r#"{"msg":"start"}"#));
        for _ in 0..10 {
            s = ProgressUpdate::merge(Some(&s), upd(&empties));
        }
        assert!(charged(&s.failures) <= MAX_LIST_BYTES);
        assert_eq!(s.failures.len() as u64 + s.dropped, 10 * 340_001);

        let bytes = format!(r#"{{"errors":[{}"x"]}}"#, "\"x\",".repeat(65_535));
        let mut s = ProgressUpdate::merge(None, upd(&bytes));
        s = ProgressUpdate::merge(Some(&s), upd(&bytes));
        assert!(charged(&s.errors) <= MAX_LIST_BYTES, "{}", s.errors.len());
        assert_eq!(s.errors.len() as u64 + s.dropped, 65_536);
    }

    #[test]
    fn bounded_decoding_keeps_go_s_rules() {
        // A later key wins and replaces the list (and what it dropped); null changes nothing.
        let u = upd(r#"{"errors":["a","b"],"Errors":["c"],"errors":null,"total":null}"#);
        assert_eq!(u.errors, ["c"]);
        assert_eq!(u.total, 0);
        // Go leaves a string it is given null for empty.
        assert_eq!(upd(r#"{"failures":["a",null]}"#).failures, ["a", ""]);
        // A wrong type is an error, also past what is kept.
        assert!(ProgressInput::decode(br#"{"errors":[1]}"#).is_err());
        let late = format!(r#"{{"errors":[{}1]}}"#, "\"x\",".repeat(10_000));
        assert!(ProgressInput::decode(late.as_bytes()).is_err());
        assert!(ProgressInput::decode(br#"{"msg":5}"#).is_err());
        assert!(ProgressInput::decode(br#"{"appendtotals":"yes"}"#).is_err());
        assert!(ProgressInput::decode(br#"{"total":1.5}"#).is_err());
        // Unknown keys are skipped whatever they hold.
        let u = upd(r#"{"other":{"deep":[[[{"x":null}]]]},"completed":2}"#);
        assert_eq!(u.completed, 2);
        // A long message or item is cut as it is read, noting its length.
        let long = format!(
            r#"{{"msg":"{}","errors":["{}"]}}"#,
            "m".repeat(1 << 20),
            "e".repeat(5000)
        );
        let u = ProgressInput::decode(long.as_bytes()).unwrap();
        assert!(u.msg.len() <= MAX_MSG_BYTES && u.msg.ends_with("[cut from 1048576 bytes]"));
        assert!(
            u.errors[0].len() <= MAX_ITEM_BYTES && u.errors[0].ends_with("[cut from 5000 bytes]")
        );
    }
}
