//! A byte filter in front of the JUnit reader. The XML reader holds each event whole, so one
//! 512 MiB `<system-out>` text (a 521 KB gzip upload) cost 512 MiB, twice. Through this filter
//! no text run, attribute value or CDATA section passes longer than the cap given: the rest is
//! dropped and a note of the run's length put in its place. Comment text is dropped whole, and
//! markup itself (a tag name, a declaration, a processing instruction) longer than the cap is an
//! error. Cuts fall on a UTF-8 character boundary and never inside an entity reference, so what
//! passes is well-formed exactly when the input was.

use std::io::{self, BufRead, Read};

/// Longest entity reference (`&...;`) kept open before a cut may fall inside it; a real one is
/// a few bytes, and a longer one is malformed anyway.
const ENTITY_BYTES: u64 = 64;
/// Markup always allowed, whatever the cap on text.
const MARKUP_BYTES: u64 = 4 << 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Text,
    /// Just after `<`.
    Open,
    /// Inside a start or end tag; `Some(q)` inside an attribute value quoted by `q`.
    Tag(Option<u8>),
    /// After `<!`, the bytes read so far telling a comment, CDATA or a declaration apart.
    Bang,
    /// Inside `<!-- ... -->`, with the count of `-` just read.
    Comment(u8),
    /// Inside `<![CDATA[ ... ]]>`, with the count of `]` just read.
    CData(u8),
    /// Inside `<? ... ?>`; `true` just after a `?`.
    Pi(bool),
    /// Inside `<!DOCTYPE ...>` or another declaration: its quote and `[` depth.
    Decl(Option<u8>, u32),
}

/// Where the filter is and what the current run has cost.
struct Filter {
    cap: u64,
    state: State,
    /// Bytes of the current text run, attribute value, CDATA section or markup.
    run: u64,
    /// Whether the rest of the current run is being dropped.
    dropping: bool,
    /// Where in the run an entity reference opened and is not yet closed.
    entity: Option<u64>,
    /// The length of the tag around the attribute value being read.
    tag_run: u64,
    bang: Vec<u8>,
}

impl Filter {
    fn note(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(format!("... [cut from {} bytes]", self.run).as_bytes());
    }

    fn start_run(&mut self) {
        self.run = 0;
        self.dropping = false;
        self.entity = None;
    }

    /// One byte of a capped run (text, attribute value, CDATA).
    fn content(&mut self, b: u8, entities: bool, out: &mut Vec<u8>) {
        self.run += 1;
        if self.dropping {
            return;
        }
        let open_entity = self.entity.is_some_and(|at| self.run - at <= ENTITY_BYTES);
        if self.run > self.cap && !open_entity && b & 0xC0 != 0x80 {
            self.dropping = true;
            return;
        }
        out.push(b);
        if entities {
            match b {
                b'&' => self.entity = Some(self.run),
                b';' => self.entity = None,
                _ => {}
            }
        }
    }

    /// One byte of markup, which is never cut: longer than the cap (and a few KiB) is an error.
    fn markup(&mut self, b: u8, out: &mut Vec<u8>) -> io::Result<()> {
        self.run += 1;
        let cap = self.cap.max(MARKUP_BYTES);
        if self.run > cap {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("XML markup longer than {cap} bytes"),
            ));
        }
        out.push(b);
        Ok(())
    }

    fn step(&mut self, b: u8, out: &mut Vec<u8>) -> io::Result<()> {
        match self.state {
            State::Text => {
                if b == b'<' {
                    if self.dropping {
                        self.note(out);
                    }
                    out.push(b);
                    self.state = State::Open;
                    self.start_run();
                } else {
                    self.content(b, true, out);
                }
            }
            State::Open => {
                out.push(b);
                self.run = 1;
                self.state = match b {
                    b'!' => {
                        self.bang.clear();
                        State::Bang
                    }
                    b'?' => State::Pi(false),
                    b'>' => State::Text,
                    _ => State::Tag(None),
                };
            }
            State::Tag(None) => {
                self.markup(b, out)?;
                match b {
                    b'"' | b'\'' => {
                        self.tag_run = self.run;
                        self.state = State::Tag(Some(b));
                        self.start_run();
                    }
                    b'>' => {
                        self.state = State::Text;
                        self.start_run();
                    }
                    _ => {}
                }
            }
            State::Tag(Some(q)) => {
                if b == q {
                    if self.dropping {
                        self.note(out);
                    }
                    out.push(b);
                    self.start_run();
                    // The tag's own length goes on after the value.
                    self.run = self.tag_run;
                    self.state = State::Tag(None);
                } else {
                    self.content(b, true, out);
                }
            }
            State::Bang => {
                self.markup(b, out)?;
                self.bang.push(b);
                const COMMENT: &[u8] = b"--";
                const CDATA: &[u8] = b"[CDATA[";
                if self.bang == COMMENT {
                    self.state = State::Comment(0);
                } else if self.bang == CDATA {
                    self.state = State::CData(0);
                    self.start_run();
                } else if !COMMENT.starts_with(&self.bang) && !CDATA.starts_with(&self.bang) {
                    self.state = match b {
                        b'>' => State::Text,
                        b'"' | b'\'' => State::Decl(Some(b), 0),
                        b'[' => State::Decl(None, 1),
                        _ => State::Decl(None, 0),
                    };
                }
            }
            State::Comment(dashes) => match b {
                b'-' => self.state = State::Comment(dashes.saturating_add(1)),
                b'>' if dashes >= 2 => {
                    out.extend_from_slice(b"-->");
                    self.state = State::Text;
                    self.start_run();
                }
                _ => self.state = State::Comment(0),
            },
            State::CData(brackets) => {
                if b == b'>' && brackets >= 2 {
                    if self.dropping {
                        // The `]]` read last end the section; they are not its text.
                        self.run = self.run.saturating_sub(2);
                        self.note(out);
                        out.extend_from_slice(b"]]");
                    }
                    out.push(b);
                    self.state = State::Text;
                    self.start_run();
                } else {
                    self.state = State::CData(if b == b']' {
                        brackets.saturating_add(1)
                    } else {
                        0
                    });
                    self.content(b, false, out);
                }
            }
            State::Pi(question) => {
                self.markup(b, out)?;
                self.state = match b {
                    b'>' if question => State::Text,
                    b'?' => State::Pi(true),
                    _ => State::Pi(false),
                };
                if self.state == State::Text {
                    self.start_run();
                }
            }
            State::Decl(quote, depth) => {
                self.markup(b, out)?;
                self.state = match (quote, b) {
                    (Some(q), b) if b == q => State::Decl(None, depth),
                    (Some(_), _) => State::Decl(quote, depth),
                    (None, b'"' | b'\'') => State::Decl(Some(b), depth),
                    (None, b'[') => State::Decl(None, depth + 1),
                    (None, b']') => State::Decl(None, depth.saturating_sub(1)),
                    (None, b'>') if depth == 0 => State::Text,
                    _ => State::Decl(None, depth),
                };
                if self.state == State::Text {
                    self.start_run();
                }
            }
        }
        Ok(())
    }
}

/// `inner` with every text run, attribute value and CDATA section cut to `cap` bytes (see the
/// module's header).
pub(crate) struct CappedXml<R> {
    inner: R,
    filter: Filter,
    pending: Vec<u8>,
    at: usize,
}

impl<R: BufRead> CappedXml<R> {
    pub(crate) fn new(inner: R, cap: u64) -> Self {
        Self {
            inner,
            filter: Filter {
                cap,
                state: State::Text,
                run: 0,
                dropping: false,
                entity: None,
                tag_run: 0,
                bang: Vec::new(),
            },
            pending: Vec::new(),
            at: 0,
        }
    }
}

impl<R: BufRead> Read for CappedXml<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.at < self.pending.len() {
                let n = out.len().min(self.pending.len() - self.at);
                out[..n].copy_from_slice(&self.pending[self.at..self.at + n]);
                self.at += n;
                return Ok(n);
            }
            self.pending.clear();
            self.at = 0;
            let input = self.inner.fill_buf()?;
            if input.is_empty() {
                return Ok(0);
            }
            let n = input.len().min(16 << 10);
            for &b in &input[..n] {
                self.filter.step(b, &mut self.pending)?;
            }
            self.inner.consume(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn through(xml: &str, cap: u64) -> io::Result<String> {
        let mut out = String::new();
        CappedXml::new(xml.as_bytes(), cap).read_to_string(&mut out)?;
        Ok(out)
    }

    #[test]
    fn what_fits_passes_unchanged() {
        let xml = r#"<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "b">]><a k="v &amp; w">t &lt; u<!-- c --><![CDATA[d]]>é</a>"#;
        assert_eq!(
            through(xml, 100).unwrap(),
            xml.replace("<!-- c -->", "<!---->")
        );
    }

    #[test]
    fn long_runs_are_cut_with_a_note_on_a_character_and_entity_boundary() {
        let text = format!("<a>{}</a>", "é".repeat(10));
        assert_eq!(
            through(&text, 5).unwrap(),
            "<a>ééé... [cut from 20 bytes]</a>"
        );
        let entity = "<a>abcd&amp;efgh</a>";
        assert_eq!(
            through(entity, 5).unwrap(),
            "<a>abcd&amp;... [cut from 13 bytes]</a>"
        );
        let attr = r#"<a m="0123456789" n='x'/>"#;
        assert_eq!(through(attr, 20).unwrap(), attr);
        assert_eq!(
            through(r#"<a m="0123456789"/>"#, 8).unwrap(),
            r#"<a m="01234567... [cut from 10 bytes]"/>"#
        );
        assert_eq!(
            through("<a><![CDATA[0123456789]]></a>", 4).unwrap(),
            "<a><![CDATA[0123... [cut from 10 bytes]]]></a>"
        );
        assert!(through(&format!("<{}/>", "n".repeat(5000)), 50).is_err());
    }

    #[test]
    fn a_huge_text_passes_in_bounded_memory() {
        struct Zeros(u64);
        impl Read for Zeros {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = (buf.len() as u64).min(self.0) as usize;
                buf[..n].fill(b'x');
                self.0 -= n as u64;
                Ok(n)
            }
        }
        let body = io::BufReader::new(b"<a>".chain(Zeros(64 << 20)).chain(&b"</a>"[..]));
        let mut out = Vec::new();
        CappedXml::new(body, 1024).read_to_end(&mut out).unwrap();
        assert!(out.len() < 1200, "{}", out.len());
        assert!(String::from_utf8(out)
            .unwrap()
            .ends_with("[cut from 67108864 bytes]</a>"));
    }
}
