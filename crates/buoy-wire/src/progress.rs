//! Progress updates (compat §4.3): the JSON a plugin posts, how the server decodes it, and the
//! v0.57 append rule that merges an appending update into the stored one. What one key keeps is
//! bounded (message length, item length, bytes of its lists) whatever clients send, with a note
//! in the shown message when something was cut, and counters saturate instead of wrapping.

use serde::{Deserialize, Deserializer, Serialize};

use crate::gojson::GoObject;

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
/// Bytes of errors, failures and pending appends one key keeps, together.
pub const MAX_LIST_BYTES: usize = 64 << 10;

/// Cuts `s` to at most `max` bytes on a character boundary, saying so.
fn cut(s: &mut String, max: usize) {
    if s.len() <= max {
        return;
    }
    let full = s.len();
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

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// What a client may send. Unknown fields are ignored and `null` means "not given", as in Go;
/// `name`, `node` and `timestamp` are accepted and discarded.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ProgressInput {
    #[serde(deserialize_with = "null_as_default")]
    pub msg: String,
    #[serde(deserialize_with = "null_as_default")]
    pub total: i64,
    #[serde(deserialize_with = "null_as_default")]
    pub completed: i64,
    #[serde(deserialize_with = "null_as_default")]
    pub errors: Vec<String>,
    #[serde(deserialize_with = "null_as_default")]
    pub failures: Vec<String>,
    #[serde(deserialize_with = "null_as_default")]
    pub appendtotals: bool,
    #[serde(deserialize_with = "null_as_default")]
    pub appendcompleted: i64,
    #[serde(deserialize_with = "null_as_default")]
    pub appendfailing: Vec<String>,
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
        let mut stream = serde_json::Deserializer::from_slice(body).into_iter::<GoObject>();
        match stream.next() {
            None => Err(ProgressDecodeError("EOF".into())),
            Some(Ok(obj)) => obj
                .decode(FIELDS)
                .map_err(|e| ProgressDecodeError(e.to_string())),
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
            dropped: 0,
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
                if item.len() > budget {
                    break;
                }
                budget -= item.len();
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
        let dropped = base.dropped;
        let mut out = ProgressUpdate {
            name: next.name.clone(),
            node: next.node.clone(),
            timestamp: next.timestamp.clone(),
            msg: next.msg.clone(),
            ..base.clone()
        };
        out.dropped = dropped;
        if !base.is_appending() {
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
}
