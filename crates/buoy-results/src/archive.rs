//! Reading a results archive the way `sonobuoy results` does (compat §5.6): a `.tar.gz` written
//! by Buoy or by Sonobuoy v0.15 and newer, or a directory it was extracted to (a run directory
//! works too). `meta/config.json` must name a version of the current layout; `meta/info.json`
//! lists the plugins (archives older than v0.16.1 lack it: the plugins are then those with a
//! `sonobuoy_results.yaml`).
//!
//! An archive is untrusted input: what is read into memory is bounded per member and in all,
//! members are streamed from the archive where they are printed (never copied elsewhere first),
//! a gzip of several members is read to its end, and in a directory only regular files reached
//! without a symbolic link are read (never a link to `/dev/zero`, never a FIFO).

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
    #[error("{path}: {member}: {reason}")]
    Member {
        path: PathBuf,
        member: String,
        reason: String,
    },
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
    /// Each plugin's decoded `sonobuoy_results.yaml`, or why it could not be read.
    results: BTreeMap<String, Result<Item, String>>,
    /// `meta/clusterhealth.json` as stored, when the archive has one.
    health: Option<Vec<u8>>,
}

/// Largest `meta/*.json` read.
const MAX_META_BYTES: u64 = 1 << 20;
/// Largest `sonobuoy_results.yaml` decoded (a conformance run's is a few MB: the aggregator
/// keeps 256 KiB of detail an item and 32 MiB a plugin).
pub const MAX_RESULTS_BYTES: u64 = 48 << 20;
/// What every plugin's `sonobuoy_results.yaml` of one archive may hold together.
pub const MAX_ALL_RESULTS_BYTES: u64 = 64 << 20;

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

fn open_tar(path: &Path) -> Result<tar::Archive<flate2::read::MultiGzDecoder<File>>, ArchiveError> {
    let f = File::open(path).map_err(|source| ArchiveError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    // Go's gzip reader, which Sonobuoy's uses, reads every member of a multi-member gzip.
    Ok(tar::Archive::new(flate2::read::MultiGzDecoder::new(f)))
}

fn parse_results(bytes: &[u8]) -> Result<Item, String> {
    buoy_wire::yaml::from_slice(bytes).map_err(|e| format!("cannot decode {RESULTS_FILE}: {e}"))
}

/// Reads `r` whole if it holds at most `cap` bytes; `Ok(Err(reason))` when it holds more.
fn read_capped(r: impl Read, cap: u64) -> io::Result<Result<Vec<u8>, String>> {
    match buoy_wire::read_bounded_from(r, cap) {
        Ok(b) => Ok(Ok(b)),
        Err(e) if e.kind() == io::ErrorKind::FileTooLarge => Ok(Err(format!("{e}; not read"))),
        Err(e) => Err(e),
    }
}

/// Opens `root/rel` for reading only if it is a regular file reached without following a
/// symbolic link: an archive directory may hold links to `/dev/zero` or FIFOs that would
/// never end a read (or never start one). `Ok(None)`: nothing there.
fn open_regular(root: &Path, rel: &str) -> io::Result<Option<File>> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut at = root.to_path_buf();
    let parts: Vec<&str> = rel.split('/').filter(|p| !p.is_empty()).collect();
    for (i, part) in parts.iter().enumerate() {
        if matches!(*part, "." | "..") {
            return Err(io::Error::other(format!("{rel}: not a plain path")));
        }
        at.push(part);
        let meta = match fs::symlink_metadata(&at) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let last = i + 1 == parts.len();
        let ok = if last { meta.is_file() } else { meta.is_dir() };
        if !ok {
            let what = if meta.file_type().is_symlink() {
                "a symbolic link"
            } else if last {
                "not a regular file"
            } else {
                "not a directory"
            };
            return Err(io::Error::other(format!("{rel}: {what}; not read")));
        }
    }
    // O_NOFOLLOW and O_NONBLOCK: should the path change after the checks, a link or a FIFO
    // put there still cannot be followed or block the open.
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&at)?;
    if !f.metadata()?.is_file() {
        return Err(io::Error::other(format!(
            "{rel}: not a regular file; not read"
        )));
    }
    Ok(Some(f))
}

/// The results of one plugin read from `r`, charged to what all plugins may hold.
fn read_results(r: impl Read, all: &mut u64) -> io::Result<Result<Item, String>> {
    let cap = MAX_RESULTS_BYTES.min(*all);
    Ok(match read_capped(r, cap)? {
        Ok(b) => {
            *all -= b.len() as u64;
            parse_results(&b)
        }
        Err(_) if cap < MAX_RESULTS_BYTES => Err(format!(
            "{RESULTS_FILE}: the archive's results files hold more than {MAX_ALL_RESULTS_BYTES} bytes together; not read"
        )),
        Err(reason) => Err(format!("{RESULTS_FILE}: {reason}")),
    })
}

impl Archive {
    /// Opens a `.tar.gz` or a directory.
    pub fn open(path: &Path) -> Result<Self, ArchiveError> {
        let io_err = |source| ArchiveError::Io {
            path: path.to_path_buf(),
            source,
        };
        let member_err = |member: &str, reason: String| ArchiveError::Member {
            path: path.to_path_buf(),
            member: member.to_string(),
            reason,
        };
        let meta = fs::metadata(path).map_err(io_err)?;
        let mut config = None;
        let mut info = None;
        let mut health = None;
        let mut results = BTreeMap::new();
        let mut all = MAX_ALL_RESULTS_BYTES;
        let source = if meta.is_dir() {
            let read = |rel: &str| -> Result<Option<Vec<u8>>, ArchiveError> {
                let f = open_regular(path, rel).map_err(|e| member_err(rel, e.to_string()))?;
                match f {
                    None => Ok(None),
                    Some(f) => match read_capped(f, MAX_META_BYTES).map_err(io_err)? {
                        Ok(b) => Ok(Some(b)),
                        Err(reason) => Err(member_err(rel, reason)),
                    },
                }
            };
            config = read(CONFIG_FILE)?;
            info = read(INFO_FILE)?;
            health = read(HEALTH_FILE)?;
            if let Ok(rd) = fs::read_dir(path.join("plugins")) {
                let mut names: Vec<String> = rd
                    .filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect();
                names.sort();
                for name in names {
                    let rel = format!("plugins/{name}/{RESULTS_FILE}");
                    let tree = match open_regular(path, &rel) {
                        Ok(None) => continue,
                        Ok(Some(f)) => read_results(f, &mut all).map_err(io_err)?,
                        Err(e) => Err(e.to_string()),
                    };
                    results.insert(name, tree);
                }
            }
            Source::Dir(path.to_path_buf())
        } else {
            let mut ar = open_tar(path)?;
            for entry in ar.entries().map_err(io_err)? {
                let entry = entry.map_err(io_err)?;
                let name = entry.path().map_err(io_err)?.to_string_lossy().into_owned();
                let name = clean(&name);
                let plugin = results_plugin(name);
                if ![CONFIG_FILE, INFO_FILE, HEALTH_FILE].contains(&name) && plugin.is_none() {
                    continue;
                }
                if let Some(p) = plugin {
                    results.insert(
                        p.to_string(),
                        read_results(entry, &mut all).map_err(io_err)?,
                    );
                    continue;
                }
                let name = name.to_string();
                let b = read_capped(entry, MAX_META_BYTES)
                    .map_err(io_err)?
                    .map_err(|reason| member_err(&name, reason))?;
                match name.as_str() {
                    CONFIG_FILE => config = Some(b),
                    INFO_FILE => info = Some(b),
                    _ => health = Some(b),
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

    /// Copies `plugin`'s `sonobuoy_results.yaml` byte for byte to `out`, streamed from the
    /// archive, as `sonobuoy results -m dump` prints it; `Ok(Err(why))` when it is not there.
    pub fn copy_raw_results(
        &self,
        plugin: &str,
        out: &mut impl io::Write,
    ) -> io::Result<Result<(), String>> {
        let rel = format!("plugins/{plugin}/{RESULTS_FILE}");
        let missing = || format!("plugin {plugin}: no {rel} in the archive");
        if let Some(Err(e)) = self.results.get(plugin) {
            return Ok(Err(format!("plugin {plugin}: {e}")));
        }
        let mut found = false;
        self.read_files_in_order(std::slice::from_ref(&rel), |_, r| {
            if let Some(r) = r {
                io::copy(r, out)?;
                found = true;
            }
            Ok(false)
        })?;
        Ok(if found { Ok(()) } else { Err(missing()) })
    }

    /// `meta/clusterhealth.json` as stored, if the archive has one.
    pub fn cluster_health(&self) -> Option<&[u8]> {
        self.health.as_deref()
    }

    /// The results tree of `plugin`, or why there is none.
    pub fn results(&self, plugin: &str) -> Result<&Item, String> {
        match self.results.get(plugin) {
            Some(Ok(i)) => Ok(i),
            Some(Err(e)) => Err(format!("plugin {plugin}: {e}")),
            None => Err(format!(
                "plugin {plugin}: no plugins/{plugin}/{RESULTS_FILE} in the archive"
            )),
        }
    }

    /// Calls `each(i, contents)` for `files[0]`, `files[1]`, ... in that order, with a reader of
    /// the file's contents streamed from the archive, or `None` when the archive has no such
    /// regular file; `each` returns whether to go on. Nothing is copied anywhere first (a
    /// member may be gigabytes). A tarball is read once per stretch of `files` that it holds
    /// in the same order, once in all when the order is the archive's.
    pub fn read_files_in_order(
        &self,
        files: &[String],
        mut each: impl FnMut(usize, Option<&mut dyn Read>) -> io::Result<bool>,
    ) -> io::Result<()> {
        match &self.source {
            Source::Dir(root) => {
                for (i, rel) in files.iter().enumerate() {
                    let go_on = match open_regular(root, rel) {
                        Ok(Some(mut f)) => each(i, Some(&mut f))?,
                        Ok(None) => each(i, None)?,
                        Err(e) => return Err(e),
                    };
                    if !go_on {
                        break;
                    }
                }
            }
            Source::Tarball(path) => {
                let mut next = 0;
                while next < files.len() {
                    let start = next;
                    let mut ar = open_tar(path).map_err(|e| io::Error::other(e.to_string()))?;
                    for entry in ar.entries()? {
                        let mut entry = entry?;
                        if entry.header().entry_type() != tar::EntryType::Regular {
                            continue;
                        }
                        let name = entry.path()?.to_string_lossy().into_owned();
                        if clean(&name) != files[next] {
                            continue;
                        }
                        if !each(next, Some(&mut entry))? {
                            return Ok(());
                        }
                        next += 1;
                        if next == files.len() {
                            return Ok(());
                        }
                    }
                    // A whole pass found nothing from here on: the next file is not there.
                    if next == start {
                        if !each(next, None)? {
                            return Ok(());
                        }
                        next += 1;
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
