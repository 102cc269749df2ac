//! The cluster health section `sonobuoy results` prints after the plugins when no plugin is
//! named (`meta/clusterhealth.json`, Sonobuoy v0.57). An archive without the file shows the
//! empty summary, as Sonobuoy does.

use std::collections::BTreeMap;
use std::io::{self, Write};

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ClusterSummary {
    pub node_health: HealthInfo,
    pub pod_health: HealthInfo,
    pub api_version: String,
    pub error_summary: BTreeMap<String, BTreeMap<String, i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct HealthInfo {
    pub total_nodes: i64,
    pub healthy_nodes: i64,
    pub details: Vec<HealthDetail>,
}

#[derive(Debug, Default, Deserialize, Clone)]
#[serde(default)]
pub struct HealthDetail {
    pub name: String,
    pub healthy: bool,
    pub ready: String,
    pub reason: String,
    pub message: String,
    pub namespace: String,
}

impl ClusterSummary {
    /// Decodes `meta/clusterhealth.json`; none (or an undecodable one) is the empty summary.
    pub fn from_json(bytes: Option<&[u8]>) -> Self {
        bytes
            .and_then(|b| serde_json::from_slice(b).ok())
            .unwrap_or_default()
    }
}

/// Unhealthy entries, by namespace then name.
fn unhealthy(details: &[HealthDetail]) -> Vec<HealthDetail> {
    let mut out: Vec<HealthDetail> = details.iter().filter(|d| !d.healthy).cloned().collect();
    out.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    out
}

fn ratio(out: &mut impl Write, what: &str, h: &HealthInfo) -> io::Result<()> {
    write!(out, "{what}: {}/{}", h.healthy_nodes, h.total_nodes)?;
    if h.total_nodes != 0 {
        write!(out, " ({}%)", 100 * h.healthy_nodes / h.total_nodes)?;
    }
    writeln!(out)
}

/// The report-mode text.
pub fn write_text(s: &ClusterSummary, out: &mut impl Write) -> io::Result<()> {
    writeln!(out, "Run Details:")?;
    writeln!(out, "API Server version: {}", s.api_version)?;
    ratio(out, "Node health", &s.node_health)?;
    let n = &s.node_health;
    if !n.details.is_empty() && n.healthy_nodes < n.total_nodes {
        writeln!(out, "Details for failed nodes:")?;
        for d in unhealthy(&n.details) {
            writeln!(
                out,
                "{} Ready:{}: {}: {}",
                d.name, d.ready, d.reason, d.message
            )?;
        }
        writeln!(out)?;
    }
    let p = &s.pod_health;
    if !p.details.is_empty() {
        ratio(out, "Pods health", p)?;
        if p.healthy_nodes < p.total_nodes {
            writeln!(out, "Details for failed pods:")?;
            for d in unhealthy(&p.details) {
                writeln!(
                    out,
                    "{}/{} Ready:{}: {}: {}",
                    d.namespace, d.name, d.ready, d.reason, d.message
                )?;
            }
        }
    }
    if !s.error_summary.is_empty() {
        writeln!(out, "Errors detected in files:")?;
        // Sonobuoy walks a Go map here (random order); error types are sorted instead.
        for (kind, files) in &s.error_summary {
            let mut by_count: Vec<(&String, &i64)> = files.iter().collect();
            by_count.sort_by(|a, b| b.1.cmp(a.1));
            let width = by_count
                .first()
                .map(|(_, n)| n.to_string().len())
                .unwrap_or(1);
            writeln!(out, "{kind}:")?;
            for (file, n) in by_count {
                writeln!(out, "{n:>width$} {file}")?;
            }
        }
    }
    Ok(())
}

/// A string as yaml.v2 writes it: plain when that reads back as the same string, else
/// double-quoted.
fn yaml_str(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || " ._/-".contains(c))
        && !s.starts_with([' ', '-', '.'])
        && !s.ends_with(' ')
        && s.parse::<f64>().is_err()
        && !matches!(
            s.to_ascii_lowercase().as_str(),
            "true" | "false" | "yes" | "no" | "on" | "off" | "y" | "n" | "null" | "~"
        );
    if plain {
        s.to_string()
    } else {
        serde_json::to_string(s).unwrap_or_default()
    }
}

fn yaml_health(out: &mut impl Write, key: &str, h: &HealthInfo) -> io::Result<()> {
    writeln!(out, "{key}:")?;
    writeln!(out, "  total_nodes: {}", h.total_nodes)?;
    writeln!(out, "  healthy_nodes: {}", h.healthy_nodes)?;
    if !h.details.is_empty() {
        writeln!(out, "  details:")?;
        for d in &h.details {
            writeln!(out, "  - name: {}", yaml_str(&d.name))?;
            writeln!(out, "    healthy: {}", d.healthy)?;
            writeln!(out, "    ready: {}", yaml_str(&d.ready))?;
            for (k, v) in [
                ("reason", &d.reason),
                ("message", &d.message),
                ("namespace", &d.namespace),
            ] {
                if !v.is_empty() {
                    writeln!(out, "    {k}: {}", yaml_str(v))?;
                }
            }
        }
    }
    Ok(())
}

/// The dump-mode YAML (yaml.v2's layout of Sonobuoy's struct), then the blank line
/// `fmt.Println` adds.
pub fn write_yaml(s: &ClusterSummary, out: &mut impl Write) -> io::Result<()> {
    yaml_health(out, "node_health", &s.node_health)?;
    yaml_health(out, "pod_health", &s.pod_health)?;
    writeln!(out, "api_version: {}", yaml_str(&s.api_version))?;
    if s.error_summary.is_empty() {
        writeln!(out, "error_summary: {{}}")?;
    } else {
        writeln!(out, "error_summary:")?;
        for (kind, files) in &s.error_summary {
            writeln!(out, "  {}:", yaml_str(kind))?;
            for (f, n) in files {
                writeln!(out, "    {}: {n}", yaml_str(f))?;
            }
        }
    }
    writeln!(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_summary_prints_as_sonobuoy_prints_it() {
        let s = ClusterSummary::from_json(None);
        let mut t = Vec::new();
        write_text(&s, &mut t).unwrap();
        assert_eq!(
            String::from_utf8(t).unwrap(),
            "Run Details:\nAPI Server version: \nNode health: 0/0\n"
        );
        let mut y = Vec::new();
        write_yaml(&s, &mut y).unwrap();
        assert_eq!(
            String::from_utf8(y).unwrap(),
            "node_health:\n  total_nodes: 0\n  healthy_nodes: 0\npod_health:\n  total_nodes: 0\n  healthy_nodes: 0\napi_version: \"\"\nerror_summary: {}\n\n"
        );
    }

    #[test]
    fn unhealthy_nodes_and_pods_are_listed() {
        let json = br#"{"node_health":{"total_nodes":2,"healthy_nodes":1,"details":[
            {"name":"n2","healthy":false,"ready":"False","reason":"KubeletNotReady","message":"down"},
            {"name":"n1","healthy":true,"ready":"True"}]},
          "pod_health":{"total_nodes":3,"healthy_nodes":2,"details":[
            {"name":"p","namespace":"kube-system","healthy":false,"ready":"False","reason":"Crash","message":"x"}]},
          "api_version":"v1.26.3","error_summary":{"error":{"podlogs/a.txt":3,"podlogs/b.txt":12}}}"#;
        let s = ClusterSummary::from_json(Some(json));
        let mut t = Vec::new();
        write_text(&s, &mut t).unwrap();
        assert_eq!(
            String::from_utf8(t).unwrap(),
            "Run Details:\nAPI Server version: v1.26.3\nNode health: 1/2 (50%)\nDetails for failed nodes:\nn2 Ready:False: KubeletNotReady: down\n\nPods health: 2/3 (66%)\nDetails for failed pods:\nkube-system/p Ready:False: Crash: x\nErrors detected in files:\nerror:\n12 podlogs/b.txt\n 3 podlogs/a.txt\n"
        );
    }
}
