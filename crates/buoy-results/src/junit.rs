//! JUnit XML (result formats `junit` and `e2e`): a `<testsuites>` or single `<testsuite>` root
//! becomes suite items with one item per test case (compat §6.9). The file is read as a stream
//! of XML events through [`crate::xmlcap`], so no event is larger than [`DETAIL_BYTES`], and
//! what an item keeps of its failure text and output is bounded too, with a note where it was
//! cut (a departure: Sonobuoy keeps them whole, and a 512 MiB `<system-out>` in a small gzip
//! upload took a 512 MiB aggregator down).

use std::io::{BufRead, BufReader};

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

use crate::item::{Item, FAILED, PASSED, SKIPPED};

type XmlResult<T> = Result<T, String>;

fn xml_err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// What one detail of an item (a failure's text, a test's output) keeps.
pub const DETAIL_BYTES: usize = 256 << 10;
/// Detail text one plugin's items keep in all; past it, each detail keeps [`SMALL_DETAIL_BYTES`].
pub const PLUGIN_DETAIL_BYTES: usize = 32 << 20;
/// What a detail keeps once its plugin's [`PLUGIN_DETAIL_BYTES`] are spent.
pub const SMALL_DETAIL_BYTES: usize = 4 << 10;
/// Room for the note a cut leaves, beyond a cap.
const NOTE_ROOM: usize = 64;

/// What is left of one plugin's [`PLUGIN_DETAIL_BYTES`].
#[derive(Debug)]
pub struct DetailBudget {
    left: usize,
}

impl Default for DetailBudget {
    fn default() -> Self {
        Self {
            left: PLUGIN_DETAIL_BYTES,
        }
    }
}

impl DetailBudget {
    /// `text`, once `total` bytes long, cut to what a detail may keep now (with a note if it
    /// was cut here or before), and charged.
    fn keep(&mut self, mut text: String, total: usize) -> String {
        let cap = if self.left >= DETAIL_BYTES {
            DETAIL_BYTES
        } else {
            SMALL_DETAIL_BYTES
        };
        if text.len() > cap + NOTE_ROOM || total > text.len() {
            let end = buoy_wire::floor_char_boundary(&text, cap);
            text.truncate(end);
            text.push_str(&format!("... [cut from {} bytes]", total.max(end)));
        }
        self.left = self.left.saturating_sub(text.len());
        text
    }
}

/// Text read with the length it had.
#[derive(Default)]
struct Text {
    kept: String,
    total: usize,
}

/// The suites of one JUnit document, or why it could not be read; item details are charged to
/// `budget`.
pub fn parse_suites<R: BufRead>(input: R, budget: &mut DetailBudget) -> Result<Vec<Item>, String> {
    let capped = crate::xmlcap::CappedXml::new(input, DETAIL_BYTES as u64);
    let mut reader = Reader::from_reader(BufReader::new(capped));
    let mut buf = Vec::new();
    loop {
        let ev = reader.read_event_into(&mut buf).map_err(xml_err)?;
        match ev {
            Event::Start(e) => {
                let e = e.into_owned();
                return root(&mut reader, &e, false, budget);
            }
            Event::Empty(e) => {
                let e = e.into_owned();
                return root(&mut reader, &e, true, budget);
            }
            Event::Eof => return Err("no root element (empty document)".into()),
            Event::Text(t) if !t.iter().all(u8::is_ascii_whitespace) => {
                return Err("text before the root element".into())
            }
            _ => {}
        }
        buf.clear();
    }
}

fn local(e: &BytesStart) -> String {
    String::from_utf8_lossy(e.local_name().as_ref()).into_owned()
}

fn attr(e: &BytesStart, name: &str) -> XmlResult<Option<String>> {
    for a in e.attributes() {
        let a = a.map_err(xml_err)?;
        if a.key.local_name().as_ref() == name.as_bytes() {
            return Ok(Some(a.unescape_value().map_err(xml_err)?.into_owned()));
        }
    }
    Ok(None)
}

fn root<R: BufRead>(
    r: &mut Reader<R>,
    e: &BytesStart,
    empty: bool,
    budget: &mut DetailBudget,
) -> XmlResult<Vec<Item>> {
    let mut suites = match local(e).as_str() {
        "testsuites" => {
            let mut suites = Vec::new();
            if !empty {
                children(r, |r, child, child_empty| {
                    if local(child) == "testsuite" {
                        suites.push(suite(r, child, child_empty, budget)?);
                    } else if !child_empty {
                        skip(r, child)?;
                    }
                    Ok(())
                })?;
            }
            suites
        }
        "testsuite" => vec![suite(r, e, empty, budget)?],
        other => {
            return Err(format!(
                "expected a <testsuites> or <testsuite> root element, found <{other}>"
            ))
        }
    };
    for (i, s) in suites.iter_mut().enumerate() {
        if s.name.is_empty() {
            s.name = format!("testsuite-{:03}", i + 1);
        }
    }
    Ok(suites)
}

/// Calls `f` for every child element of the element just opened, up to its end tag.
fn children<R: BufRead>(
    r: &mut Reader<R>,
    mut f: impl FnMut(&mut Reader<R>, &BytesStart, bool) -> XmlResult<()>,
) -> XmlResult<()> {
    let mut buf = Vec::new();
    loop {
        match r.read_event_into(&mut buf).map_err(xml_err)? {
            Event::Start(e) => {
                let e = e.into_owned();
                f(r, &e, false)?;
            }
            Event::Empty(e) => {
                let e = e.into_owned();
                f(r, &e, true)?;
            }
            Event::End(_) => return Ok(()),
            Event::Eof => return Err("unexpected end of document".into()),
            _ => {}
        }
        buf.clear();
    }
}

/// Appends what fits of `piece` to `out`, counting all of it.
fn push_capped(out: &mut Text, piece: &str) {
    out.total += piece.len();
    let room = (DETAIL_BYTES + NOTE_ROOM).saturating_sub(out.kept.len());
    out.kept
        .push_str(&piece[..buoy_wire::floor_char_boundary(piece, room)]);
}

/// The text directly inside the element just opened (text and CDATA, entities decoded);
/// nested elements are skipped, as Go's `,chardata`. At most [`DETAIL_BYTES`] (and a note) of
/// it is kept.
fn chardata<R: BufRead>(r: &mut Reader<R>) -> XmlResult<Text> {
    let mut out = Text::default();
    let mut buf = Vec::new();
    loop {
        match r.read_event_into(&mut buf).map_err(xml_err)? {
            Event::Text(t) => push_capped(&mut out, &t.unescape().map_err(xml_err)?),
            Event::CData(c) => push_capped(&mut out, &String::from_utf8_lossy(&c.into_inner())),
            Event::Start(e) => {
                let e = e.into_owned();
                skip(r, &e)?;
            }
            Event::End(_) => return Ok(out),
            Event::Eof => return Err("unexpected end of document".into()),
            _ => {}
        }
        buf.clear();
    }
}

fn skip<R: BufRead>(r: &mut Reader<R>, e: &BytesStart) -> XmlResult<()> {
    let mut buf = Vec::new();
    r.read_to_end_into(e.name(), &mut buf)
        .map(|_| ())
        .map_err(xml_err)
}

fn suite<R: BufRead>(
    r: &mut Reader<R>,
    e: &BytesStart,
    empty: bool,
    budget: &mut DetailBudget,
) -> XmlResult<Item> {
    let mut item = Item::new(attr(e, "name")?.unwrap_or_default(), PASSED);
    if !empty {
        children(r, |r, child, child_empty| {
            if local(child) == "testcase" {
                item.items.push(case(r, child, child_empty, budget)?);
            } else if !child_empty {
                skip(r, child)?;
            }
            Ok(())
        })?;
    }
    Ok(item)
}

#[derive(Default)]
struct Message {
    present: bool,
    text: Text,
}

fn message<R: BufRead>(r: &mut Reader<R>, e: &BytesStart, empty: bool) -> XmlResult<Message> {
    let msg = attr(e, "message")?.unwrap_or_default();
    let body = if empty { Text::default() } else { chardata(r)? };
    let text = if msg.is_empty() && body.kept.is_empty() {
        Text::default()
    } else {
        let kept = format!("{msg} {}", body.kept).trim().to_string();
        let total = kept.len() + (body.total - body.kept.len());
        Text { kept, total }
    };
    Ok(Message {
        present: true,
        text,
    })
}

fn case<R: BufRead>(
    r: &mut Reader<R>,
    e: &BytesStart,
    empty: bool,
    budget: &mut DetailBudget,
) -> XmlResult<Item> {
    let name = attr(e, "name")?.unwrap_or_default();
    let (mut skipped, mut failure, mut error) = (false, Message::default(), Message::default());
    let (mut out, mut err) = (Text::default(), Text::default());
    if !empty {
        children(r, |r, child, child_empty| {
            match local(child).as_str() {
                "skipped" => {
                    skipped = true;
                    if !child_empty {
                        skip(r, child)?;
                    }
                }
                "failure" => failure = message(r, child, child_empty)?,
                "error" => error = message(r, child, child_empty)?,
                "system-out" if !child_empty => out = chardata(r)?,
                "system-err" if !child_empty => err = chardata(r)?,
                _ if !child_empty => skip(r, child)?,
                _ => {}
            }
            Ok(())
        })?;
    }
    let status = if skipped {
        SKIPPED
    } else if failure.present || error.present {
        FAILED
    } else {
        PASSED
    };
    let mut item = Item::new(name, status);
    for (key, value) in [
        ("failure", failure.text),
        ("error", error.text),
        ("system-out", out),
        ("system-err", err),
    ] {
        if !value.kept.is_empty() {
            let kept = budget.keep(value.kept, value.total);
            item.details.insert(key.into(), kept.into());
        }
    }
    Ok(item)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Vec<Item>, String> {
        parse_suites(s.as_bytes(), &mut DetailBudget::default())
    }

    #[test]
    fn a_single_testsuite_root_is_one_suite() {
        let s = parse(
            r#"<?xml version="1.0"?><testsuite name="s"><testcase name="a"/><testcase name="b"><skipped/></testcase></testsuite>"#,
        )
        .unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].name, "s");
        assert_eq!(s[0].items[0].status, PASSED);
        assert_eq!(s[0].items[1].status, SKIPPED);
    }

    #[test]
    fn failure_and_error_text_is_message_space_chardata_trimmed() {
        let s = parse(
            "<testsuites><testsuite><testcase name=\"f\"><failure message=\"boom\">\n  at x &amp; y<![CDATA[ <z>]]></failure><system-out>out</system-out></testcase>\
             <testcase name=\"e\"><error>only body </error></testcase><testcase name=\"s\"><skipped/><failure/></testcase></testsuite></testsuites>",
        )
        .unwrap();
        let cases = &s[0].items;
        assert_eq!(s[0].name, "testsuite-001");
        assert_eq!(cases[0].status, FAILED);
        assert_eq!(cases[0].details["failure"], "boom \n  at x & y <z>");
        assert_eq!(cases[0].details["system-out"], "out");
        assert_eq!(cases[1].status, FAILED);
        assert_eq!(cases[1].details["error"], "only body");
        assert_eq!(cases[2].status, SKIPPED);
        assert!(cases[2].details.is_empty());
    }

    #[test]
    fn malformed_documents_are_errors() {
        assert!(parse("").is_err());
        assert!(parse("<testsuite><testcase name='a'></testsuite>").is_err());
        assert!(parse("<testsuite><testcase name='a'/>").is_err());
        assert!(parse("<html/>").unwrap_err().contains("<html>"));
    }

    #[test]
    fn long_detail_text_is_cut_with_a_note_and_a_plugin_s_details_are_bounded() {
        let out = "o".repeat(DETAIL_BYTES * 3);
        let xml = format!(
            "<testsuite><testcase name=\"a\"><failure message=\"m\">{out}</failure><system-out>x<!-- c -->{out}<![CDATA[{out}]]></system-out></testcase></testsuite>"
        );
        let s = parse(&xml).unwrap();
        let d = &s[0].items[0].details;
        let failure = d["failure"].as_str().unwrap();
        assert!(
            failure.len() <= DETAIL_BYTES + NOTE_ROOM,
            "{}",
            failure.len()
        );
        assert!(failure.starts_with("m ooo"));
        assert!(
            failure.ends_with(&format!("[cut from {} bytes]", DETAIL_BYTES * 3)),
            "{}",
            &failure[failure.len() - 80..]
        );
        let sysout = d["system-out"].as_str().unwrap();
        assert!(sysout.len() <= DETAIL_BYTES + NOTE_ROOM, "{}", sysout.len());
        assert!(sysout.starts_with("xooo") && sysout.contains("[cut from"));

        let mut budget = DetailBudget::default();
        let case = format!(
            "<testcase name=\"c\"><system-out>{}</system-out></testcase>",
            "o".repeat(DETAIL_BYTES)
        );
        let many = format!(
            "<testsuite>{}</testsuite>",
            case.repeat(PLUGIN_DETAIL_BYTES / DETAIL_BYTES + 10)
        );
        let s = parse_suites(many.as_bytes(), &mut budget).unwrap();
        let kept: usize = s[0]
            .items
            .iter()
            .map(|i| i.details["system-out"].as_str().unwrap().len())
            .sum();
        assert!(
            kept <= PLUGIN_DETAIL_BYTES + 11 * (SMALL_DETAIL_BYTES + NOTE_ROOM),
            "{kept}"
        );
        let last = s[0].items.last().unwrap().details["system-out"]
            .as_str()
            .unwrap();
        assert!(
            last.len() <= SMALL_DETAIL_BYTES + NOTE_ROOM && last.contains("[cut from"),
            "{}",
            last.len()
        );
    }
}
