//! Fixtures shared by the archive-reading tests.

use std::path::Path;

/// A DaemonSet plugin's `sonobuoy_results.yaml` with one node and one file leaf.
pub const DS_RESULTS: &str = r#"name: systemd-logs
status: passed
meta:
  type: summary
items:
- name: node-1
  status: passed
  meta:
    type: node
  items:
  - name: systemd_logs
    status: passed
    meta:
      file: results/node-1/systemd_logs
"#;

/// Writes a `.tar.gz` of regular files, in order, as Sonobuoy's tarball writer lays them out.
pub fn write_tarball(path: &Path, files: &[(&str, &[u8])]) {
    std::fs::write(path, gzip(&tar_bytes(files))).unwrap();
}

/// A tar (not compressed) of regular files, in order.
pub fn tar_bytes(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, *data).unwrap();
    }
    b.into_inner().unwrap()
}

/// `data` as one gzip member.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}
