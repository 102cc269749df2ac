//! Which nodes a DaemonSet plugin expects results from (compat §6.7, v0.57 rules):
//! `nodeSelector` AND the required node affinity, whose terms are ORed and whose expressions
//! within a term are ANDed (In, NotIn, Exists, DoesNotExist).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, NodeSelectorRequirement, PodSpec};

fn expr_matches(labels: &BTreeMap<String, String>, e: &NodeSelectorRequirement) -> bool {
    let value = labels.get(&e.key);
    let values = e.values.as_deref().unwrap_or_default();
    match e.operator.as_str() {
        "In" => value.is_some_and(|v| values.contains(v)),
        "NotIn" => !value.is_some_and(|v| values.contains(v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        // Gt/Lt and unknown operators: Sonobuoy supports none of them; they never match.
        _ => false,
    }
}

/// Whether a DaemonSet with this pod spec expects a result from `node`.
pub fn node_matches(spec: Option<&PodSpec>, node: &Node) -> bool {
    let Some(spec) = spec else { return true };
    let empty = BTreeMap::new();
    let labels = node.metadata.labels.as_ref().unwrap_or(&empty);
    if let Some(sel) = &spec.node_selector {
        if !sel.iter().all(|(k, v)| labels.get(k) == Some(v)) {
            return false;
        }
    }
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| {
            na.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    match required {
        None => true,
        Some(r) if r.node_selector_terms.is_empty() => true,
        Some(r) => r.node_selector_terms.iter().any(|t| {
            let exprs = t.match_expressions.as_deref().unwrap_or_default();
            !exprs.is_empty() && exprs.iter().all(|e| expr_matches(labels, e))
        }),
    }
}

/// The names of the nodes a DaemonSet plugin with this pod spec runs on, in list order.
pub fn filter_nodes<'a>(spec: Option<&PodSpec>, nodes: &'a [Node]) -> Vec<&'a str> {
    nodes
        .iter()
        .filter(|n| node_matches(spec, n))
        .filter_map(|n| n.metadata.name.as_deref())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, labels: serde_json::Value) -> Node {
        serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap()
    }

    fn spec(v: serde_json::Value) -> PodSpec {
        serde_json::from_value(v).unwrap()
    }

    fn nodes() -> Vec<Node> {
        vec![
            node("a", json!({"role": "worker", "zone": "1"})),
            node("b", json!({"role": "worker", "zone": "2"})),
            node("c", json!({"role": "control-plane"})),
        ]
    }

    fn affinity(terms: serde_json::Value) -> serde_json::Value {
        json!({"containers": [], "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}}})
    }

    #[test]
    fn no_spec_or_no_constraints_means_every_node() {
        let ns = nodes();
        assert_eq!(filter_nodes(None, &ns), ["a", "b", "c"]);
        assert_eq!(
            filter_nodes(Some(&spec(json!({"containers": []}))), &ns),
            ["a", "b", "c"]
        );
    }

    #[test]
    fn node_selector_is_honoured() {
        let ns = nodes();
        let s = spec(json!({"containers": [], "nodeSelector": {"role": "worker"}}));
        assert_eq!(filter_nodes(Some(&s), &ns), ["a", "b"]);
    }

    #[test]
    fn expressions_are_anded_within_a_term_and_terms_ored() {
        let ns = nodes();
        let s = spec(affinity(json!([{"matchExpressions": [
            {"key": "role", "operator": "In", "values": ["worker"]},
            {"key": "zone", "operator": "NotIn", "values": ["2"]},
        ]}])));
        assert_eq!(filter_nodes(Some(&s), &ns), ["a"]);
        let s = spec(affinity(json!([
            {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["2"]}]},
            {"matchExpressions": [{"key": "zone", "operator": "DoesNotExist"}]},
        ])));
        assert_eq!(filter_nodes(Some(&s), &ns), ["b", "c"]);
        let s = spec(affinity(
            json!([{"matchExpressions": [{"key": "zone", "operator": "Exists"}]}]),
        ));
        assert_eq!(filter_nodes(Some(&s), &ns), ["a", "b"]);
    }

    #[test]
    fn node_selector_and_affinity_combine_by_and() {
        let ns = nodes();
        let mut v = affinity(
            json!([{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["1", "2"]}]}]),
        );
        v["nodeSelector"] = json!({"zone": "2"});
        assert_eq!(filter_nodes(Some(&spec(v)), &ns), ["b"]);
    }
}
