//! Writing a directory tree into a tar stream, the one way both the worker (a results
//! directory named by the done file) and the aggregator (sealing the run) do it.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Appends every directory and regular file under `root` to `tar`, depth first in name order,
/// named relative to `root` (no `./` prefix). `exclude` is left out (an archive being written
/// inside `root`). Anything else — links, sockets, devices — is left out too and returned, since
/// the aggregator accepts only files and directories.
pub fn append_tree<W: Write>(
    tar: &mut tar::Builder<W>,
    root: &Path,
    exclude: Option<&Path>,
) -> io::Result<Vec<PathBuf>> {
    let mut skipped = Vec::new();
    append_dir_entries(tar, root, Path::new(""), exclude, &mut skipped)?;
    Ok(skipped)
}

fn append_dir_entries<W: Write>(
    tar: &mut tar::Builder<W>,
    dir: &Path,
    rel: &Path,
    exclude: Option<&Path>,
    skipped: &mut Vec<PathBuf>,
) -> io::Result<()> {
    let mut entries = std::fs::read_dir(dir)?.collect::<Result<Vec<_>, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        if Some(path.as_path()) == exclude {
            continue;
        }
        let name = rel.join(e.file_name());
        let ft = e.file_type()?;
        if ft.is_dir() {
            tar.append_dir(&name, &path)?;
            append_dir_entries(tar, &path, &name, exclude, skipped)?;
        } else if ft.is_file() {
            tar.append_file(&name, &mut std::fs::File::open(&path)?)?;
        } else {
            skipped.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_is_written_depth_first_in_name_order_without_the_excluded_file() {
        let d = std::env::temp_dir().join(format!("buoy-archive-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("sub")).unwrap();
        std::fs::write(d.join("sub/a.txt"), b"a").unwrap();
        std::fs::write(d.join("b.xml"), b"<x/>").unwrap();
        std::fs::write(d.join("out.tar"), b"").unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink("/etc/passwd", d.join("link")).unwrap();
        let mut tar = tar::Builder::new(Vec::new());
        let skipped = append_tree(&mut tar, &d, Some(&d.join("out.tar"))).unwrap();
        let bytes = tar.into_inner().unwrap();
        let mut ar = tar::Archive::new(&bytes[..]);
        let names: Vec<String> = ar
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["b.xml", "sub", "sub/a.txt"]);
        #[cfg(unix)]
        assert_eq!(skipped, [d.join("link")]);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
