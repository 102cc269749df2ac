//! Reading a results archive the way `sonobuoy results` does (compat §5.6): a `.tar.gz` written
//! by Buoy or by Sonobuoy v0.15 and newer, or a directory it was extracted to (a run directory
//! works too). `meta/config.json` must name a version of the current layout; `meta/info.json`
//! lists the plugins (archives older than v0.16.1 lack it: the plugins are then those with a
//! `sonobuoy_results.yaml`).

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::item::Item;
use crate::process::RESULTS_FILE;

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{0}: no meta/config.json; not a Sonobuoy or Buoy results archive")]
    NoConfig(PathBuf),
    #[error("{path}: meta/config.json: {reason}")]
    BadConfig { path: PathBuf, reason: String },
    #[error("{path}: archive version {version} predates v0.15; its layout is not supported")]
    TooOld { path: PathBuf, version: String },
}

/// Where the archive lives.
#[derive(Debug, Clone)]
enum Source {
    Dir(PathBuf),
    Tarball(PathBuf),
}

/// An opened archive: its version, plugins and their results trees.
#[derive(Debug, Clone)]
pub struct Archive {
    source: Source,
    pub version: String,
    /// Plugins in load order.
    pub plugins: Vec<String>,
    /// Each plugin's `sonobuoy_results.yaml` as stored, and its decoded tree.
    results: BTreeMap<String, (Vec<u8>, Result<Item, String>)>,
    /// `meta/clusterhealth.json` as stored, when the archive has one.
    health: Option<Vec<u8>>,
}

const CONFIG_FILE: &str = "meta/config.json";
const INFO_FILE: &str = "meta/info.json";
/// Where Sonobuoy v0.57 keeps its cluster health summary.
pub const HEALTH_FILE: &str = "meta/clusterhealth.json";

fn clean(name: &str) -> &str {
    name.trim_start_matches("./")
}

/// The plugin whose `sonobuoy_results.yaml` is at `path`, if it is one.
fn results_plugin(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("plugins/")?;
    let (plugin, file) = rest.split_once('/')?;
    (file == RESULTS_FILE).then_some(plugin)
}

/// Checks a `Version` the way Sonobuoy's reader does: at least two numeric segments, and at
/// least v0.15.
fn check_version(path: &Path, version: &str) -> Result<(), ArchiveError> {
    let bad = |reason: String| ArchiveError::BadConfig {
        path: path.to_path_buf(),
        reason,
    };
    let core = version.trim_start_matches('v');
    let core = core.split(['-', '+']).next().unwrap_or_default();
    let segs: Vec<u64> = core
        .split('.')
        .map(|s| s.parse::<u64>())
        .collect::<Result<_, _>>()
        .map_err(|_| bad(format!("Version {version:?} is not a version number")))?;
    if segs.len() < 2 {
        return Err(bad(format!(
            "Version {version:?} has fewer than 2 segments"
        )));
    }
    if (segs[0], segs[1]) < (0, 15) {
        return Err(ArchiveError::TooOld {
            path: path.to_path_buf(),
            version: version.to_string(),
        });
    }
    Ok(())
}

fn open_tar(path: &Path) -> Result<tar::Archive<flate2::read::GzDecoder<File>>, ArchiveError> {
    let f = File::open(path).map_err(|source| ArchiveError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(tar::Archive::new(flate2::read::GzDecoder::new(f)))
}

fn parse_results(bytes: &[u8]) -> Result<Item, String> {
    buoy_wire::yaml::from_slice(bytes).map_err(|e| format!("cannot decode {RESULTS_FILE}: {e}"))
}

impl Archive {
    /// Opens a `.tar.gz` or a directory.
    pub fn open(path: &Path) -> Result<Self, ArchiveError> {
        let io_err = |source| ArchiveError::Io {
            path: path.to_path_buf(),
            source,
        };
        let meta = fs::metadata(path).map_err(io_err)?;
        let mut config = None;
        let mut info = None;
        let mut health = None;
        let mut results = BTreeMap::new();
        let source = if meta.is_dir() {
            let read = |rel: &str| fs::read(path.join(rel)).ok();
            config = read(CONFIG_FILE);
            info = read(INFO_FILE);
            health = read(HEALTH_FILE);
            if let Ok(rd) = fs::read_dir(path.join("plugins")) {
                for e in rd.filter_map(Result::ok) {
                    let name = e.file_name().to_string_lossy().into_owned();
                    if let Ok(b) = fs::read(e.path().join(RESULTS_FILE)) {
                        let tree = parse_results(&b);
                        results.insert(name, (b, tree));
                    }
                }
            }
            Source::Dir(path.to_path_buf())
        } else {
            let mut ar = open_tar(path)?;
            for entry in ar.entries().map_err(io_err)? {
                let mut entry = entry.map_err(io_err)?;
                let name = entry.path().map_err(io_err)?.to_string_lossy().into_owned();
                let name = clean(&name);
                let plugin = results_plugin(name);
                if ![CONFIG_FILE, INFO_FILE, HEALTH_FILE].contains(&name) && plugin.is_none() {
                    continue;
                }
                let mut b = Vec::new();
                entry.read_to_end(&mut b).map_err(io_err)?;
                match plugin {
                    Some(p) => {
                        let tree = parse_results(&b);
                        results.insert(p.to_string(), (b, tree));
                    }
                    None if name == CONFIG_FILE => config = Some(b),
                    None if name == INFO_FILE => info = Some(b),
                    None => health = Some(b),
                }
            }
            Source::Tarball(path.to_path_buf())
        };
        let config = config.ok_or_else(|| ArchiveError::NoConfig(path.to_path_buf()))?;
        let config: serde_json::Value =
            serde_json::from_slice(&config).map_err(|e| ArchiveError::BadConfig {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
        let version = config
            .get("Version")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string();
        check_version(path, &version)?;
        let mut plugins: Vec<String> = info
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v.get("plugins").cloned())
            .and_then(|v| serde_json::from_value(v).ok())
            .unwrap_or_default();
        if plugins.is_empty() {
            plugins = results.keys().cloned().collect();
        }
        Ok(Self {
            source,
            version,
            plugins,
            results,
            health,
        })
    }

    /// `plugin`'s `sonobuoy_results.yaml` byte for byte, as `sonobuoy results -m dump` prints it.
    pub fn raw_results(&self, plugin: &str) -> Result<&[u8], String> {
        match self.results.get(plugin) {
            Some((raw, _)) => Ok(raw),
            None => Err(format!(
                "plugin {plugin}: no plugins/{plugin}/{RESULTS_FILE} in the archive"
            )),
        }
    }

    /// `meta/clusterhealth.json` as stored, if the archive has one.
    pub fn cluster_health(&self) -> Option<&[u8]> {
        self.health.as_deref()
    }

    /// The results tree of `plugin`, or why there is none.
    pub fn results(&self, plugin: &str) -> Result<&Item, String> {
        match self.results.get(plugin).map(|(_, t)| t) {
            Some(Ok(i)) => Ok(i),
            Some(Err(e)) => Err(format!("plugin {plugin}: {e}")),
            None => Err(format!(
                "plugin {plugin}: no plugins/{plugin}/{RESULTS_FILE} in the archive"
            )),
        }
    }

    /// Copies the archive files `wanted` (paths inside the archive) into `dest` under the same
    /// relative paths; files that are not there are skipped. Unsafe names are never written.
    pub fn extract_files(&self, wanted: &[String], dest: &Path) -> io::Result<()> {
        let safe = |p: &str| {
            !p.starts_with('/')
                && Path::new(p)
                    .components()
                    .all(|c| matches!(c, std::path::Component::Normal(_)))
        };
        let wanted: Vec<&String> = wanted.iter().filter(|w| safe(w)).collect();
        let place = |rel: &str| -> io::Result<File> {
            let to = dest.join(rel);
            if let Some(parent) = to.parent() {
                fs::create_dir_all(parent)?;
            }
            File::create(to)
        };
        match &self.source {
            Source::Dir(root) => {
                for w in wanted {
                    if let Ok(mut f) = File::open(root.join(w)) {
                        io::copy(&mut f, &mut place(w)?)?;
                    }
                }
            }
            Source::Tarball(path) => {
                let mut ar = open_tar(path).map_err(|e| io::Error::other(e.to_string()))?;
                for entry in ar.entries()? {
                    let mut entry = entry?;
                    if entry.header().entry_type() != tar::EntryType::Regular {
                        continue;
                    }
                    let name = entry.path()?.to_string_lossy().into_owned();
                    let name = clean(&name);
                    if wanted.iter().any(|w| w.as_str() == name) {
                        io::copy(&mut entry, &mut place(name)?)?;
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_from_v0_15_are_read_and_older_ones_refused() {
        let p = Path::new("x");
        for ok in ["v0.15.0", "v0.57.5", "v0.15", "0.16.1-rc1", "v1.0.0"] {
            check_version(p, ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        assert!(matches!(
            check_version(p, "v0.10.0"),
            Err(ArchiveError::TooOld { .. })
        ));
        assert!(matches!(
            check_version(p, "v1"),
            Err(ArchiveError::BadConfig { .. })
        ));
        assert!(matches!(
            check_version(p, ""),
            Err(ArchiveError::BadConfig { .. })
        ));
    }

    #[test]
    fn results_paths_are_recognised() {
        assert_eq!(
            results_plugin("plugins/e2e/sonobuoy_results.yaml"),
            Some("e2e")
        );
        assert_eq!(
            results_plugin("plugins/e2e/results/sonobuoy_results.yaml"),
            None
        );
    }
}
