//! The item tree of `sonobuoy_results.yaml` (compat §6.9): one shape for plugins, nodes, files,
//! suites and tests, the v0.57 status roll-up, and the leaf counts behind `result-counts`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub const PASSED: &str = "passed";
pub const FAILED: &str = "failed";
pub const SKIPPED: &str = "skipped";
pub const UNKNOWN: &str = "unknown";
pub const TIMEOUT: &str = "timeout";

/// `meta.type` values.
pub const TYPE_SUMMARY: &str = "summary";
pub const TYPE_NODE: &str = "node";
pub const TYPE_FILE: &str = "file";

/// An item's `meta`: a few string pairs, kept sorted by key (so it serialises as Go writes a
/// map). A sorted vector rather than a `BTreeMap`, whose smallest node is over 500 bytes: a
/// 10,000-node run holds one per item while it is post-processed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Meta(Vec<(String, String)>);

impl Meta {
    pub fn insert(&mut self, key: String, value: String) {
        match self.0.binary_search_by(|(k, _)| k.as_str().cmp(&key)) {
            Ok(i) => self.0[i].1 = value,
            Err(i) => {
                // Most items carry one or two pairs, and a 10,000-node run holds thousands
                // of items at once: grow by one, not to the four a first push reserves.
                self.0.reserve_exact(1);
                self.0.insert(i, (key, value))
            }
        }
    }

    pub fn get(&self, key: &str) -> Option<&String> {
        self.0
            .binary_search_by(|(k, _)| k.as_str().cmp(key))
            .ok()
            .map(|i| &self.0[i].1)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &String)> {
        self.0.iter().map(|(k, v)| (k, v))
    }
}

impl<const N: usize> From<[(String, String); N]> for Meta {
    fn from(pairs: [(String, String); N]) -> Self {
        let mut m = Meta::default();
        for (k, v) in pairs {
            m.insert(k, v);
        }
        m
    }
}

impl Serialize for Meta {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for Meta {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Later keys win, as they would in a map.
        let map = BTreeMap::<String, String>::deserialize(d)?;
        let mut v: Vec<(String, String)> = map.into_iter().collect();
        v.shrink_to_fit();
        Ok(Meta(v))
    }
}

/// One node of the results tree. Keys and their order follow Sonobuoy's `Item`; empty `meta`,
/// `details` and `items` are left out.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Item {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub status: String,
    #[serde(default, skip_serializing_if = "Meta::is_empty")]
    pub meta: Meta,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub details: BTreeMap<String, serde_json::Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<Item>,
}

impl Item {
    pub fn new(name: impl Into<String>, status: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            status: status.into(),
            ..Self::default()
        }
    }

    pub fn with_meta(mut self, key: &str, value: impl Into<String>) -> Self {
        self.meta.insert(key.to_string(), value.into());
        self
    }

    pub fn is_leaf(&self) -> bool {
        self.items.is_empty()
    }

    /// The first item named `name` in a pre-order walk (the item itself first), as
    /// Sonobuoy's `GetSubTreeByName`; an empty name is the item itself.
    pub fn find(&self, name: &str) -> Option<&Item> {
        if name.is_empty() || self.name == name {
            return Some(self);
        }
        self.items.iter().find_map(|i| i.find(name))
    }

    /// Leaf items below (or at) this one, depth first.
    pub fn leaves(&self) -> Vec<&Item> {
        let mut out = Vec::new();
        self.collect_leaves(&mut out);
        out
    }

    fn collect_leaves<'a>(&'a self, out: &mut Vec<&'a Item>) {
        if self.is_leaf() {
            out.push(self);
        } else {
            for i in &self.items {
                i.collect_leaves(out);
            }
        }
    }

    /// Leaves by status (branches are not counted), as in `result-counts`.
    pub fn leaf_counts(&self) -> BTreeMap<String, i64> {
        let mut counts = BTreeMap::new();
        for l in self.leaves() {
            *counts.entry(l.status.clone()).or_insert(0) += 1;
        }
        counts
    }
}

/// Whether `status` counts as a failure when statuses roll up.
pub fn is_failure(status: &str) -> bool {
    status == FAILED || status == TIMEOUT
}

fn is_standard(status: &str) -> bool {
    matches!(status, "" | PASSED | FAILED | SKIPPED | TIMEOUT | UNKNOWN)
}

/// Sets `root.status` from its children and recomputes every branch below (the v0.57 roll-up).
/// If any leaf has a status of its own making, every branch becomes a sorted `"k: n, ..."`
/// count of the leaves below it; otherwise failed (or timeout) beats unknown beats passed, and
/// an empty status is `unknown`. A root with no items is `unknown`.
pub fn roll_up(root: &mut Item) {
    let custom = root.leaves().iter().any(|l| !is_standard(&l.status));
    if root.items.is_empty() {
        root.status = UNKNOWN.into();
    } else if custom {
        counts_roll_up(root);
    } else {
        root.status = standard_roll_up(&mut root.items).into();
    }
}

fn standard_roll_up(items: &mut [Item]) -> &'static str {
    if items.is_empty() {
        return UNKNOWN;
    }
    let (mut failed, mut unknown) = (false, false);
    for i in items.iter_mut() {
        if !i.items.is_empty() {
            i.status = standard_roll_up(&mut i.items).into();
        }
        if i.status.is_empty() {
            i.status = UNKNOWN.into();
        }
        if is_failure(&i.status) {
            failed = true;
        } else if i.status == UNKNOWN {
            unknown = true;
        }
    }
    if failed {
        FAILED
    } else if unknown {
        UNKNOWN
    } else {
        PASSED
    }
}

/// Parses a `"k: n, k2: n2"` count string; `None` if `s` is not one.
pub fn parse_counts(s: &str) -> Option<BTreeMap<String, i64>> {
    let mut out = BTreeMap::new();
    for part in s.split(", ") {
        let (k, n) = part.rsplit_once(": ")?;
        let n: i64 = n.trim().parse().ok()?;
        if k.is_empty() {
            return None;
        }
        *out.entry(k.to_string()).or_insert(0) += n;
    }
    Some(out)
}

pub fn format_counts(counts: &BTreeMap<String, i64>) -> String {
    counts
        .iter()
        .map(|(k, n)| format!("{k}: {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn counts_roll_up(item: &mut Item) -> BTreeMap<String, i64> {
    if item.items.is_empty() {
        if item.status.is_empty() {
            item.status = UNKNOWN.into();
        }
        return parse_counts(&item.status)
            .unwrap_or_else(|| BTreeMap::from([(item.status.clone(), 1)]));
    }
    let mut sum = BTreeMap::new();
    for child in &mut item.items {
        for (k, n) in counts_roll_up(child) {
            *sum.entry(k).or_insert(0) += n;
        }
    }
    item.status = format_counts(&sum);
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A first push reserves room for four pairs (192 bytes); at two metas per node that was
    /// 2.9 MB of a 10,000-node run's post-processing peak for pairs never stored.
    #[test]
    fn meta_holds_room_only_for_its_pairs() {
        let one: Meta = [("type".to_string(), TYPE_NODE.to_string())].into();
        assert_eq!(one.0.capacity(), 1);
        let two = Item::new("f", PASSED)
            .with_meta("type", TYPE_FILE)
            .with_meta("file", "a/b");
        assert_eq!(two.meta.0.capacity(), 2);
        assert_eq!(two.meta.get("file").map(String::as_str), Some("a/b"));
        assert_eq!(two.meta.iter().next().unwrap().0, "file");
    }

    fn branch(name: &str, items: Vec<Item>) -> Item {
        Item {
            name: name.into(),
            items,
            ..Item::default()
        }
    }

    #[test]
    fn failures_beat_unknown_beat_passed_and_every_branch_is_recomputed() {
        let mut root = branch(
            "p",
            vec![
                branch("f1", vec![Item::new("a", PASSED), Item::new("b", SKIPPED)]),
                branch("f2", vec![Item::new("c", ""), Item::new("d", PASSED)]),
                branch("f3", vec![Item::new("e", TIMEOUT)]),
            ],
        );
        root.items[0].status = FAILED.into(); // stale; recomputed
        roll_up(&mut root);
        assert_eq!(root.status, FAILED);
        assert_eq!(root.items[0].status, PASSED);
        assert_eq!(root.items[1].status, UNKNOWN);
        assert_eq!(root.items[1].items[0].status, UNKNOWN);
        assert_eq!(root.items[2].status, FAILED);
    }

    #[test]
    fn empty_trees_and_empty_nodes_are_unknown() {
        let mut root = branch("p", vec![]);
        roll_up(&mut root);
        assert_eq!(root.status, UNKNOWN);
        let mut root = branch("p", vec![branch("node1", vec![])]);
        roll_up(&mut root);
        assert_eq!(root.items[0].status, UNKNOWN);
        assert_eq!(root.status, UNKNOWN);
    }

    #[test]
    fn a_custom_leaf_turns_every_branch_into_counts_and_count_strings_are_summed() {
        let mut root = branch(
            "p",
            vec![
                branch(
                    "n1",
                    vec![Item::new("x", "complete"), Item::new("y", PASSED)],
                ),
                branch("n2", vec![Item::new("z", "complete: 2, failed: 1")]),
            ],
        );
        roll_up(&mut root);
        assert_eq!(root.items[0].status, "complete: 1, passed: 1");
        assert_eq!(root.items[1].status, "complete: 2, failed: 1");
        assert_eq!(root.status, "complete: 3, failed: 1, passed: 1");
    }

    #[test]
    fn counts_are_of_leaves_only_at_any_depth() {
        let root = branch(
            "p",
            vec![
                branch("s", vec![Item::new("a", PASSED), Item::new("b", FAILED)]),
                Item::new("c", PASSED),
            ],
        );
        assert_eq!(
            root.leaf_counts(),
            BTreeMap::from([(PASSED.to_string(), 2), (FAILED.to_string(), 1)])
        );
    }

    #[test]
    fn find_is_pre_order_and_empty_name_is_the_root() {
        let root = branch(
            "p",
            vec![
                branch("n1", vec![Item::new("n2", PASSED)]),
                branch("n2", vec![]),
            ],
        );
        assert_eq!(root.find("").unwrap().name, "p");
        assert!(root.find("n2").unwrap().is_leaf());
        assert!(root.find("nope").is_none());
    }

    #[test]
    fn yaml_keys_follow_sonobuoy_and_empty_parts_are_left_out() {
        let mut i = Item::new("t", PASSED).with_meta("file", "results/x");
        i.items.push(Item::new("leaf", SKIPPED));
        let y = serde_yaml_ng::to_string(&i).unwrap();
        assert_eq!(
            y,
            "name: t\nstatus: passed\nmeta:\n  file: results/x\nitems:\n- name: leaf\n  status: skipped\n"
        );
    }
}
