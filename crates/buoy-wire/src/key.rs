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

impl fmt::Display for ResultKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.plugin, self.node)
    }
}

/// Whether a plugin or node name can be used as one URL path segment and one directory name.
/// Sonobuoy's router accepts any non-empty segment without `/`; a directory name additionally
/// must not be `.` or `..` or contain NUL.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\0'])
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(is_valid_name("systemd_logs"));
        assert!(is_valid_name("node 1"));
    }
}
