//! Sonobuoy plugin manifests (compat §4.4): `sonobuoy-config`, the plugin container `spec`,
//! `podSpec`, `extra-volumes` and `config-map`, loaded from files or directories of
//! `*.yaml`/`*.yml`. The raw JSON of each part is kept for the Kubernetes drivers; a typed view of
//! the container serves the local runner.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::key::is_valid_name;

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a valid plugin manifest: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("plugin {name:?} is defined twice: {first} and {second}")]
    Duplicate {
        name: String,
        first: PathBuf,
        second: PathBuf,
    },
    #[error("{0}: no plugin manifests (*.yaml, *.yml) found")]
    Empty(PathBuf),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Driver {
    Job,
    DaemonSet,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SonobuoyConfig {
    #[serde(default)]
    pub driver: String,
    #[serde(rename = "plugin-name", default)]
    pub plugin_name: String,
    #[serde(rename = "result-format", default)]
    pub result_format: String,
    #[serde(rename = "result-files", default)]
    pub result_files: Vec<String>,
    #[serde(rename = "skip-cleanup", default)]
    pub skip_cleanup: bool,
    #[serde(default)]
    pub description: String,
    #[serde(rename = "source-url", default)]
    pub source_url: String,
    #[serde(default)]
    pub order: i64,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct EnvVar {
    pub name: String,
    #[serde(default)]
    pub value: Option<String>,
    #[serde(rename = "valueFrom", default)]
    pub value_from: Option<Value>,
}

/// The parts of a corev1.Container the local runner uses.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Container {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub image: String,
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: Vec<EnvVar>,
    #[serde(rename = "workingDir", default)]
    pub working_dir: Option<String>,
}

/// One loaded plugin.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub path: PathBuf,
    pub config: SonobuoyConfig,
    pub driver: Driver,
    pub container: Container,
    /// The whole manifest as JSON, for drivers and `definition.json`.
    pub raw: Value,
}

impl Manifest {
    pub fn name(&self) -> &str {
        &self.config.plugin_name
    }

    /// Parses one manifest from YAML text.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ManifestError> {
        let invalid = |reason: String| ManifestError::Invalid {
            path: path.to_path_buf(),
            reason,
        };
        let raw: Value = crate::yaml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        if !raw.is_object() {
            return Err(invalid("expected a mapping at the top level".into()));
        }
        let config: SonobuoyConfig =
            serde_json::from_value(raw.get("sonobuoy-config").cloned().unwrap_or(Value::Null))
                .map_err(|e| invalid(format!("sonobuoy-config: {e}")))?;
        let driver = match config.driver.to_ascii_lowercase().as_str() {
            "job" => Driver::Job,
            "daemonset" => Driver::DaemonSet,
            other => {
                return Err(invalid(format!(
                    "unknown driver {other:?} (expected Job or DaemonSet)"
                )))
            }
        };
        if !is_valid_name(&config.plugin_name) {
            return Err(invalid(format!(
                "plugin-name {:?} must be non-empty and contain no '/'",
                config.plugin_name
            )));
        }
        let container: Container = match raw.get("spec") {
            Some(v) if !v.is_null() => {
                serde_json::from_value(v.clone()).map_err(|e| invalid(format!("spec: {e}")))?
            }
            _ => Container::default(),
        };
        Ok(Self {
            path: path.to_path_buf(),
            config,
            driver,
            container,
            raw,
        })
    }

    /// `sonobuoy-config.result-format`, with Sonobuoy's default of `raw`.
    pub fn result_format(&self) -> &str {
        match self.config.result_format.as_str() {
            "" => "raw",
            f => f,
        }
    }
}

/// Plugin indexes grouped for launch (v0.57 `getOrderedPlugins`): by `order` ascending, by
/// name within a group.
pub fn order_groups(plugins: &[Manifest]) -> Vec<Vec<usize>> {
    let mut idx: Vec<usize> = (0..plugins.len()).collect();
    idx.sort_by(|&a, &b| {
        (plugins[a].config.order, plugins[a].name())
            .cmp(&(plugins[b].config.order, plugins[b].name()))
    });
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for i in idx {
        match groups.last_mut() {
            Some(g) if plugins[g[0]].config.order == plugins[i].config.order => g.push(i),
            _ => groups.push(vec![i]),
        }
    }
    groups
}

/// The largest plugin definition read; real ones are a few KiB.
pub const MAX_MANIFEST_BYTES: u64 = 1 << 20;

fn read_manifest(path: &Path) -> Result<Manifest, ManifestError> {
    let read = |source| ManifestError::Read {
        path: path.to_path_buf(),
        source,
    };
    let bytes = crate::read_bounded(path, MAX_MANIFEST_BYTES).map_err(read)?;
    let text = String::from_utf8(bytes).map_err(|e| {
        read(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("not UTF-8: {e}"),
        ))
    })?;
    Manifest::parse(path, &text)
}

fn is_manifest_file(p: &Path) -> bool {
    matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) && p.is_file()
}

/// Loads manifests from files and directories (non-recursive, `*.yaml`/`*.yml`, in name order so
/// runs are repeatable). A plugin name defined twice is an error.
pub fn load(paths: &[PathBuf]) -> Result<Vec<Manifest>, ManifestError> {
    let mut files = Vec::new();
    for p in paths {
        let meta = std::fs::metadata(p).map_err(|source| ManifestError::Read {
            path: p.clone(),
            source,
        })?;
        if meta.is_dir() {
            let rd = std::fs::read_dir(p).map_err(|source| ManifestError::Read {
                path: p.clone(),
                source,
            })?;
            let mut found: Vec<PathBuf> = rd
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| is_manifest_file(p))
                .collect();
            if found.is_empty() {
                return Err(ManifestError::Empty(p.clone()));
            }
            found.sort();
            files.extend(found);
        } else {
            files.push(p.clone());
        }
    }
    files.dedup();
    let mut out: Vec<Manifest> = Vec::new();
    let mut seen: BTreeMap<String, PathBuf> = BTreeMap::new();
    for f in files {
        let m = read_manifest(&f)?;
        if let Some(first) = seen.get(m.name()) {
            return Err(ManifestError::Duplicate {
                name: m.name().to_string(),
                first: first.clone(),
                second: f,
            });
        }
        seen.insert(m.name().to_string(), f);
        out.push(m);
    }
    Ok(out)
}

/// Kubernetes' `$(VAR)` expansion of a container's command, args and env values: `$(NAME)`
/// becomes what `lookup` gives for `NAME`, `$$` a literal `$`, and an unknown or unterminated
/// reference stays as written.
pub fn expand_env_refs<'a>(s: &str, lookup: impl Fn(&str) -> Option<&'a str>) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
            continue;
        }
        let known = after
            .strip_prefix('(')
            .and_then(|inner| Some((inner, inner.find(')')?)))
            .and_then(|(inner, end)| Some((lookup(&inner[..end])?, &inner[end + 1..])));
        match known {
            Some((value, tail)) => {
                out.push_str(value);
                rest = tail;
            }
            None => {
                out.push('$');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {

    #[test]
    fn order_groups_are_ascending_and_name_sorted_within() {
        let m = |name: &str, order: i64| {
            Manifest::parse(
                Path::new("x.yaml"),
                &format!("sonobuoy-config: {{driver: Job, plugin-name: {name}, order: {order}}}\n"),
            )
            .unwrap()
        };
        let ps = vec![m("zeta", 0), m("late", 2), m("alpha", 0), m("mid", 1)];
        assert_eq!(order_groups(&ps), vec![vec![2, 0], vec![3], vec![1]]);
        assert!(order_groups(&[]).is_empty());
    }

    use super::*;

    const JOB: &str = r#"
sonobuoy-config:
  driver: job
  plugin-name: e2e
  result-format: junit
  unknown-field: ignored
spec:
  name: plugin
  image: example/e2e
  command: ["/bin/sh", "-c"]
  args: ["echo hi"]
  env:
  - name: A
    value: "1"
  - name: NODE
    valueFrom: {fieldRef: {fieldPath: spec.nodeName}}
"#;

    #[test]
    fn parses_a_job_manifest() {
        let m = Manifest::parse(Path::new("e2e.yaml"), JOB).unwrap();
        assert_eq!(m.driver, Driver::Job);
        assert_eq!(m.name(), "e2e");
        assert_eq!(m.result_format(), "junit");
        assert_eq!(m.container.command, ["/bin/sh", "-c"]);
        assert_eq!(m.container.env[0].value.as_deref(), Some("1"));
        assert!(m.container.env[1].value_from.is_some());
    }

    #[test]
    fn rejects_bad_driver_and_missing_name() {
        let e = Manifest::parse(
            Path::new("x.yaml"),
            "sonobuoy-config: {driver: Deployment, plugin-name: x}",
        )
        .unwrap_err();
        assert!(e.to_string().contains("unknown driver"), "{e}");
        let e = Manifest::parse(Path::new("x.yaml"), "sonobuoy-config: {driver: Job}").unwrap_err();
        assert!(e.to_string().contains("plugin-name"), "{e}");
        let e = Manifest::parse(Path::new("x.yaml"), "- a\n- b").unwrap_err();
        assert!(e.to_string().contains("mapping"), "{e}");
    }

    #[test]
    fn default_result_format_is_raw() {
        let m = Manifest::parse(
            Path::new("x.yaml"),
            "sonobuoy-config: {driver: DaemonSet, plugin-name: x}",
        )
        .unwrap();
        assert_eq!((m.driver, m.result_format()), (Driver::DaemonSet, "raw"));
    }

    #[test]
    fn references_expand_as_kubernetes_expands_them() {
        let env = |n: &str| match n {
            "A" => Some("1"),
            "B" => Some("two"),
            _ => None,
        };
        assert_eq!(expand_env_refs("x$(A)y$(B)", env), "x1ytwo");
        assert_eq!(expand_env_refs("$(C) $$(A) $", env), "$(C) $(A) $");
        assert_eq!(expand_env_refs("echo $HOME $(A", env), "echo $HOME $(A");
    }
}
