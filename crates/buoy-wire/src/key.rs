//! Result keys: `<plugin>/<node>`, with `global` standing for a Job plugin's single result.

use std::fmt;

/// The node name of a global (Job) result.
pub const GLOBAL_NODE: &str = "global";

/// Identity of one expected result: a plugin and a node (`global` for Job plugins).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResultKey {
    pub plugin: String,
    pub node: String,
}

impl ResultKey {
    pub fn new(plugin: impl Into<String>, node: impl Into<String>) -> Self {
        let node = node.into();
        Self {
            plugin: plugin.into(),
            node: if node.is_empty() {
                GLOBAL_NODE.to_string()
            } else {
                node
            },
        }
    }

    pub fn global(plugin: impl Into<String>) -> Self {
        Self::new(plugin, GLOBAL_NODE)
    }
}

/// Names longer than this are cut when a key is shown: a client's URL must not fill a log
/// line or a response. Real names (a DNS node name is at most 253 bytes) are never cut.
const SHOWN_NAME_BYTES: usize = 300;

fn shown(name: &str) -> std::borrow::Cow<'_, str> {
    if name.len() <= SHOWN_NAME_BYTES {
        return name.into();
    }
    let end = crate::floor_char_boundary(name, SHOWN_NAME_BYTES);
    format!("{}...({} bytes)", &name[..end], name.len()).into()
}

impl fmt::Display for ResultKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", shown(&self.plugin), shown(&self.node))
    }
}

/// The longest plugin or node name: one directory name on Linux (`NAME_MAX`).
pub const MAX_NAME_BYTES: usize = 255;

/// Whether a plugin or node name can be used as one URL path segment and one directory name.
/// Sonobuoy's router accepts any non-empty segment without `/`; a directory name additionally
/// must not be `.` or `..` or contain NUL.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\0'])
}

/// Whether a run may expect a result under this plugin or node name: a valid name no longer
/// than [`MAX_NAME_BYTES`]. A longer one could be expected but never stored, so its run could
/// never seal. (An upload under a longer name is simply unexpected, 403, as in Sonobuoy.)
pub fn is_expectable_name(name: &str) -> bool {
    is_valid_name(name) && name.len() <= MAX_NAME_BYTES
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_name_is_cut_when_shown() {
        let k = ResultKey::new("p", "n".repeat(100_000));
        let s = k.to_string();
        assert!(s.len() < 400 && s.ends_with("(100000 bytes)"), "{s}");
    }

    #[test]
    fn empty_node_keys_as_global() {
        assert_eq!(ResultKey::new("e2e", "").to_string(), "e2e/global");
        assert_eq!(
            ResultKey::new("systemd_logs", "node1").to_string(),
            "systemd_logs/node1"
        );
    }

    #[test]
    fn names_that_cannot_be_a_segment_are_invalid() {
        for bad in ["", ".", "..", "a/b", "a\0"] {
            assert!(!is_valid_name(bad), "{bad:?}");
        }
        assert!(is_valid_name(&"n".repeat(256)) && !is_expectable_name(&"n".repeat(256)));
        assert!(is_expectable_name(&"é".repeat(127)));
        assert!(is_valid_name("systemd_logs"));
        assert!(is_valid_name("node 1"));
    }
}
