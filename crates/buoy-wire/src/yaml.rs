//! YAML from files Buoy does not trust (manual results, plugin definitions, the results file in
//! an archive), checked before it is decoded. libyaml, under `serde_yaml_ng`, scans nested flow
//! collections in time quadratic in their depth (an 800 KB `{a: {a: ...` held post-processing
//! for 85 s) and refuses depths past 128 only after scanning them all. An independent streaming
//! parser walks the document first and stops at the first collection nested past
//! [`MAX_DEPTH`], or past [`MAX_NODES`] nodes, so what reaches libyaml is shallow and its scan
//! linear. What that parser cannot read is refused too, rather than handed on.

use serde::de::DeserializeOwned;

/// The deepest nesting of collections accepted: `serde_yaml_ng`'s own limit, so nothing it
/// could have decoded is refused for depth.
pub const MAX_DEPTH: usize = 128;
/// The most nodes (collections and scalars) one document may have.
pub const MAX_NODES: usize = 1_000_000;

/// Why YAML text was not decoded.
#[derive(Debug, thiserror::Error)]
pub enum YamlError {
    #[error("nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("more than {MAX_NODES} nodes")]
    TooManyNodes,
    #[error("{0}")]
    Syntax(String),
    #[error("{0}")]
    Decode(#[from] serde_yaml_ng::Error),
}

/// Walks `text` without building anything, within the bounds above.
pub fn check(text: &str) -> Result<(), YamlError> {
    use granit_parser::{Event, Options, Parser, StrInput};
    let mut options = Options::default();
    options.flow_nesting_limit = MAX_DEPTH;
    options.block_nesting_limit = MAX_DEPTH;
    let mut depth = 0usize;
    let mut nodes = 0usize;
    for event in Parser::with_options(StrInput::new(text), options) {
        let event = match event {
            Ok((e, _)) => e,
            Err(e) => {
                let text = e.to_string();
                if text.contains("recursion limit") || text.contains("nesting") {
                    return Err(YamlError::TooDeep);
                }
                return Err(YamlError::Syntax(text));
            }
        };
        match event {
            Event::SequenceStart(..) | Event::MappingStart(..) => {
                depth += 1;
                nodes += 1;
                if depth > MAX_DEPTH {
                    return Err(YamlError::TooDeep);
                }
            }
            Event::SequenceEnd | Event::MappingEnd => depth = depth.saturating_sub(1),
            Event::Scalar(..) | Event::Alias(..) => nodes += 1,
            _ => {}
        }
        if nodes > MAX_NODES {
            return Err(YamlError::TooManyNodes);
        }
    }
    Ok(())
}

/// [`check`], then `serde_yaml_ng::from_str`.
pub fn from_str<T: DeserializeOwned>(text: &str) -> Result<T, YamlError> {
    check(text)?;
    Ok(serde_yaml_ng::from_str(text)?)
}

/// [`from_str`] on bytes, which must be UTF-8.
pub fn from_slice<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, YamlError> {
    let text = std::str::from_utf8(bytes).map_err(|e| YamlError::Syntax(e.to_string()))?;
    from_str(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn deep_flow_nesting_is_refused_before_libyaml_scans_it() {
        for deep in [
            "{a: ".repeat(200_000),
            "[".repeat(200_000),
            r#"{"":["#.repeat(50_000),
            "- ".repeat(100_000),
            (0..200).map(|i| format!("{}a:\n", " ".repeat(i))).collect(),
        ] {
            let started = Instant::now();
            let got = from_str::<serde_yaml_ng::Value>(&deep);
            assert!(matches!(got, Err(YamlError::TooDeep)), "{got:?}");
            // Not a timing test: libyaml alone takes minutes on the first of these.
            let _ = started.elapsed();
        }
    }

    #[test]
    fn documents_within_the_bounds_decode_as_before() {
        let ok = format!(
            "name: x\nstatus: passed\nmeta: {{file: \"a [b\", n: [1, {{c: d}}]}}\ndetails: |\n  some [text {{ unbalanced\nitems:\n{}",
            "- name: t\n  status: failed\n".repeat(1000)
        );
        let v: serde_yaml_ng::Value = from_str(&ok).unwrap();
        assert_eq!(v["items"].as_sequence().unwrap().len(), 1000);
        let exactly = format!("{}{}", "[".repeat(MAX_DEPTH - 1), "]".repeat(MAX_DEPTH - 1));
        from_str::<serde_yaml_ng::Value>(&exactly).unwrap();
        assert!(matches!(
            from_str::<serde_yaml_ng::Value>("a: [1"),
            Err(YamlError::Syntax(_))
        ));
    }
}
