//! JUnit XML (result formats `junit` and `e2e`): a `<testsuites>` or single `<testsuite>` root
//! becomes suite items with one item per test case (compat §6.9). The file is read as a stream
//! of XML events, so a large report costs memory for its items only, never for its text twice.

use std::io::BufRead;

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

use crate::item::{Item, FAILED, PASSED, SKIPPED};

type XmlResult<T> = Result<T, String>;

fn xml_err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// The suites of one JUnit document, or why it could not be read.
pub fn parse_suites<R: BufRead>(input: R) -> Result<Vec<Item>, String> {
    let mut reader = Reader::from_reader(input);
    let mut buf = Vec::new();
    loop {
        let ev = reader.read_event_into(&mut buf).map_err(xml_err)?;
        match ev {
            Event::Start(e) => {
                let e = e.into_owned();
                return root(&mut reader, &e, false);
            }
            Event::Empty(e) => {
                let e = e.into_owned();
                return root(&mut reader, &e, true);
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

fn root<R: BufRead>(r: &mut Reader<R>, e: &BytesStart, empty: bool) -> XmlResult<Vec<Item>> {
    let mut suites = match local(e).as_str() {
        "testsuites" => {
            let mut suites = Vec::new();
            if !empty {
                children(r, |r, child, child_empty| {
                    if local(child) == "testsuite" {
                        suites.push(suite(r, child, child_empty)?);
                    } else if !child_empty {
                        skip(r, child)?;
                    }
                    Ok(())
                })?;
            }
            suites
        }
        "testsuite" => vec![suite(r, e, empty)?],
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

/// The text directly inside the element just opened (text and CDATA, entities decoded);
/// nested elements are skipped, as Go's `,chardata`.
fn chardata<R: BufRead>(r: &mut Reader<R>) -> XmlResult<String> {
    let mut out = String::new();
    let mut buf = Vec::new();
    loop {
        match r.read_event_into(&mut buf).map_err(xml_err)? {
            Event::Text(t) => out.push_str(&t.unescape().map_err(xml_err)?),
            Event::CData(c) => out.push_str(&String::from_utf8_lossy(&c.into_inner())),
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

fn suite<R: BufRead>(r: &mut Reader<R>, e: &BytesStart, empty: bool) -> XmlResult<Item> {
    let mut item = Item::new(attr(e, "name")?.unwrap_or_default(), PASSED);
    if !empty {
        children(r, |r, child, child_empty| {
            if local(child) == "testcase" {
                item.items.push(case(r, child, child_empty)?);
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
    text: String,
}

fn message<R: BufRead>(r: &mut Reader<R>, e: &BytesStart, empty: bool) -> XmlResult<Message> {
    let msg = attr(e, "message")?.unwrap_or_default();
    let body = if empty { String::new() } else { chardata(r)? };
    let text = if msg.is_empty() && body.is_empty() {
        String::new()
    } else {
        format!("{msg} {body}").trim().to_string()
    };
    Ok(Message {
        present: true,
        text,
    })
}

fn case<R: BufRead>(r: &mut Reader<R>, e: &BytesStart, empty: bool) -> XmlResult<Item> {
    let name = attr(e, "name")?.unwrap_or_default();
    let (mut skipped, mut failure, mut error) = (false, Message::default(), Message::default());
    let (mut out, mut err) = (String::new(), String::new());
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
        if !value.is_empty() {
            item.details.insert(key.into(), value.into());
        }
    }
    Ok(item)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Vec<Item>, String> {
        parse_suites(s.as_bytes())
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
}
