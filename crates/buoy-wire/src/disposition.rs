//! `content-disposition` handling (compat §1.4, departure 5): the file name a non-gzip upload is
//! stored under, parsed the way Go's `mime.ParseMediaType` parses it (so the effective name of a
//! normal upload is the one Sonobuoy would use), then reduced to a safe base name.

use std::borrow::Cow;

/// The name a result is stored under when no usable file name was sent.
pub const DEFAULT_FILENAME: &str = "result";

/// The header a worker sends for `filename` (unquoted, as Sonobuoy's worker sends it).
pub fn header_for(filename: Option<&str>) -> String {
    match filename {
        Some(f) if !f.is_empty() => format!("attachment;filename={f}"),
        _ => "attachment".to_string(),
    }
}

/// The file name to store an upload under, from the raw header value (or none).
pub fn stored_filename(header: Option<&str>) -> String {
    header
        .and_then(|h| parse_filename(h).ok().flatten())
        .and_then(|f| sanitize(&f))
        .unwrap_or_else(|| DEFAULT_FILENAME.to_string())
}

/// A byte of an RFC 2045 token: printable ASCII other than space and the tspecials.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_graphic()
        && !matches!(
            b,
            b'(' | b')'
                | b'<'
                | b'>'
                | b'@'
                | b','
                | b';'
                | b':'
                | b'\\'
                | b'"'
                | b'/'
                | b'['
                | b']'
                | b'?'
                | b'='
        )
}

fn take_token(s: &str) -> (&str, &str) {
    // Bytes, not chars: a token is ASCII, so the first other byte (any byte of a multi-byte
    // character among them) ends it on a character boundary.
    let end = s.bytes().position(|b| !is_token_byte(b)).unwrap_or(s.len());
    s.split_at(end)
}

/// Parses a quoted-string starting at `"`; returns the unescaped value and the rest. A value
/// without escapes (what workers send) is borrowed, not copied.
fn take_quoted(s: &str) -> Option<(Cow<'_, str>, &str)> {
    let inner = &s[1..];
    let end = inner.find(['"', '\\'])?;
    if inner.as_bytes()[end] == b'"' {
        return Some((Cow::Borrowed(&inner[..end]), &inner[end + 1..]));
    }
    let mut out = String::from(&inner[..end]);
    let mut chars = inner[end..].char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((Cow::Owned(out), &inner[end + i + 1..])),
            '\\' => out.push(chars.next()?.1),
            _ => out.push(c),
        }
    }
    None
}

fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
}

/// A disposition header that does not parse as a media type with parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed content-disposition header")]
pub struct MalformedDisposition;

/// The `filename` parameter of a disposition header: `Err` when the header does not parse as a
/// media type with parameters (Go then falls back to `result`), `Ok(None)` when it has none.
pub fn parse_filename(header: &str) -> Result<Option<String>, MalformedDisposition> {
    parse_params(header).ok_or(MalformedDisposition)
}

fn parse_params(header: &str) -> Option<Option<String>> {
    let (kind, mut rest) = take_token(header.trim_start());
    if kind.is_empty() {
        return None;
    }
    // Names are compared without case, as Go lowercases them; values are borrowed where they
    // can be: this runs for every upload.
    let mut params: Vec<(&str, Cow<'_, str>)> = Vec::new();
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            break;
        }
        rest = rest.strip_prefix(';')?.trim_start();
        if rest.is_empty() {
            break; // a trailing ';' is tolerated
        }
        let (name, after) = take_token(rest);
        if name.is_empty() {
            return None;
        }
        let after = after.trim_start().strip_prefix('=')?.trim_start();
        let (value, after) = if after.starts_with('"') {
            take_quoted(after)?
        } else {
            let (v, a) = take_token(after);
            if v.is_empty() {
                return None;
            }
            (Cow::Borrowed(v), a)
        };
        if params.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)) {
            return None;
        }
        params.push((name, value));
        rest = after;
    }
    // RFC 2231 extended value wins when present: charset'lang'percent-encoded.
    if let Some((_, v)) = params
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("filename*"))
    {
        let mut parts = v.splitn(3, '\'');
        let charset = parts.next().unwrap_or("").to_ascii_lowercase();
        let _lang = parts.next();
        if let Some(enc) = parts.next() {
            if charset == "utf-8" || charset == "us-ascii" {
                if let Some(bytes) = percent_decode(enc) {
                    if let Ok(s) = String::from_utf8(bytes) {
                        if !s.is_empty() {
                            return Some(Some(s));
                        }
                    }
                }
            }
        }
    }
    Some(
        params
            .into_iter()
            .find(|(n, v)| n.eq_ignore_ascii_case("filename") && !v.is_empty())
            .map(|(_, v)| v.into_owned()),
    )
}

/// Reduces a client-supplied file name to one safe base name: the last path component, without
/// control characters, never `.`/`..`, at most 255 bytes. `None` means "use the default".
pub fn sanitize(name: &str) -> Option<String> {
    let base = name.rsplit(['/', '\\']).next().unwrap_or("");
    let cleaned: Cow<'_, str> = if base.chars().any(char::is_control) {
        Cow::Owned(base.chars().filter(|c| !c.is_control()).collect())
    } else {
        Cow::Borrowed(base)
    };
    let cleaned = cleaned.trim();
    if cleaned.is_empty() || cleaned == "." || cleaned == ".." {
        return None;
    }
    Some(cleaned[..crate::floor_char_boundary(cleaned, 255)].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filename_from_header_matches_sonobuoy() {
        assert_eq!(stored_filename(Some("attachment")), "result");
        assert_eq!(stored_filename(Some("attachment;filename=foo")), "foo");
        assert_eq!(stored_filename(Some("")), "result");
        assert_eq!(stored_filename(None), "result");
        assert_eq!(
            stored_filename(Some("attachment;filename=foo.txt")),
            "foo.txt"
        );
        assert_eq!(
            stored_filename(Some("inline; filename=\"my file.xml\"")),
            "my file.xml"
        );
        assert_eq!(
            stored_filename(Some("attachment; filename*=UTF-8''caf%C3%A9.txt")),
            "café.txt"
        );
    }

    #[test]
    fn unquoted_specials_fall_back_to_result_like_go() {
        assert_eq!(
            stored_filename(Some("attachment;filename=my results.tar")),
            "result"
        );
        assert_eq!(stored_filename(Some("attachment;filename=a=b")), "result");
        assert_eq!(stored_filename(Some("attachment;filename=a/b")), "result");
    }

    #[test]
    fn traversal_is_reduced_to_a_base_name() {
        assert_eq!(stored_filename(Some("attachment;filename=\"../x\"")), "x");
        assert_eq!(stored_filename(Some("attachment;filename=\"a/b\"")), "b");
        assert_eq!(
            stored_filename(Some("attachment;filename=\"..\"")),
            "result"
        );
        assert_eq!(
            stored_filename(Some("attachment;filename=\"/etc/passwd\"")),
            "passwd"
        );
        assert_eq!(
            stored_filename(Some("attachment;filename=\"..\\\\..\\\\win.ini\"")),
            "win.ini"
        );
        assert_eq!(
            stored_filename(Some("attachment;filename=\"a\u{7}b\"")),
            "ab"
        );
    }

    #[test]
    fn escapes_case_duplicates_and_the_length_cap_hold_on_the_borrowing_paths() {
        assert_eq!(
            parse_filename(r#"attachment; filename="a\"b\\c.txt""#),
            Ok(Some(r#"a"b\c.txt"#.to_string()))
        );
        assert_eq!(
            stored_filename(Some(r#"attachment; filename="a\"b\\c.txt""#)),
            "c.txt",
            "the unescaped backslash separates a path component"
        );
        assert_eq!(
            parse_filename(r#"attachment; filename="x\yz""#),
            Ok(Some("xyz".to_string()))
        );
        assert_eq!(
            stored_filename(Some("attachment; FILENAME=up.txt")),
            "up.txt"
        );
        assert_eq!(
            parse_filename("attachment; filename=a; FileName=b"),
            Err(MalformedDisposition),
            "Go refuses a parameter named twice, whatever its case"
        );
        assert_eq!(
            stored_filename(Some(
                "attachment; Filename*=UTF-8''%C3%A9.txt; filename=e.txt"
            )),
            "é.txt"
        );
        assert_eq!(
            parse_filename(r#"attachment; filename="open"#),
            Err(MalformedDisposition)
        );
        let long = format!("{}é", "a".repeat(254)); // 256 bytes; 'é' would straddle the cap
        assert_eq!(sanitize(&long), Some("a".repeat(254)));
        assert_eq!(sanitize(&"b".repeat(300)), Some("b".repeat(255)));
        assert_eq!(sanitize("  \u{1}name.txt \t"), Some("name.txt".to_string()));
        assert_eq!(sanitize(" \u{7f} "), None);
        assert_eq!(
            parse_filename("attachment;filename=café"),
            Err(MalformedDisposition),
            "a token ends at the first byte outside printable ASCII"
        );
    }

    #[test]
    fn header_round_trips() {
        assert_eq!(
            header_for(Some("junit.xml")),
            "attachment;filename=junit.xml"
        );
        assert_eq!(header_for(None), "attachment");
        assert_eq!(
            stored_filename(Some(&header_for(Some("results.tar.gz")))),
            "results.tar.gz"
        );
    }
}
