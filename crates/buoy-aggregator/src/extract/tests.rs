//! The extractor's tests: archives built entry by entry (tar::Builder and raw headers) that must
//! be extracted, or refused with the reason a worker's operator is shown: traversal, links,
//! caps, truncation, pax and long-name tricks, out-of-range times, duplicates.

use super::*;
use flate2::{write::GzEncoder, Compression};

fn gz(data: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn tar_with(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    build(&mut b);
    b.into_inner().unwrap()
}

fn file(b: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8]) {
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    b.append_data(&mut h, name, data).unwrap();
}

/// Writes a raw header with any name, bypassing the tar crate's own path checks.
fn raw_entry(
    b: &mut tar::Builder<Vec<u8>>,
    name: &str,
    kind: tar::EntryType,
    link: Option<&str>,
    data: &[u8],
) {
    let mut h = tar::Header::new_old();
    {
        let bytes = h.as_old_mut();
        bytes.name[..name.len()].copy_from_slice(name.as_bytes());
        if let Some(l) = link {
            bytes.linkname[..l.len()].copy_from_slice(l.as_bytes());
        }
    }
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_entry_type(kind);
    h.set_cksum();
    b.append(&h, data).unwrap();
}

fn unlimited() -> DiskBudget {
    DiskBudget::new(Path::new("/"), u64::MAX, 0, 0, Default::default())
}

fn extract(bytes: &[u8]) -> (tempfile::TempDir, Result<Stats, ExtractError>) {
    let dir = tempfile::tempdir().unwrap();
    let r = extract_tar_gz(bytes, dir.path(), &Limits::default(), &unlimited());
    (dir, r)
}

#[test]
fn extracts_files_and_directories() {
    let t = tar_with(|b| {
        raw_entry(b, "dir/", tar::EntryType::Directory, None, b"");
        file(b, "dir/inside_tar.txt", b"hello");
        file(b, "./top.txt", b"top");
    });
    let (dir, r) = extract(&gz(&t));
    let s = r.unwrap();
    assert_eq!((s.files, s.bytes), (2, 8));
    assert_eq!(
        fs::read(dir.path().join("dir/inside_tar.txt")).unwrap(),
        b"hello"
    );
    assert_eq!(fs::read(dir.path().join("top.txt")).unwrap(), b"top");
}

#[test]
fn multi_member_gzip_is_accepted() {
    // Two gzip members whose concatenation is one tar stream.
    let t = tar_with(|b| file(b, "a.txt", b"a"));
    let (head, tail) = t.split_at(512);
    let mut body = gz(head);
    body.extend(gz(tail));
    let (dir, r) = extract(&body);
    r.unwrap();
    assert_eq!(fs::read(dir.path().join("a.txt")).unwrap(), b"a");
}

#[test]
fn parent_traversal_is_refused() {
    let t = tar_with(|b| raw_entry(b, "../evil.txt", tar::EntryType::Regular, None, b"x"));
    let (dir, r) = extract(&gz(&t));
    assert!(
        matches!(r, Err(ExtractError::Refused(ref m)) if m.contains("..")),
        "{r:?}"
    );
    assert!(!dir.path().parent().unwrap().join("evil.txt").exists());
}

#[test]
fn absolute_path_is_refused() {
    let t = tar_with(|b| raw_entry(b, "/tmp/evil.txt", tar::EntryType::Regular, None, b"x"));
    let (_d, r) = extract(&gz(&t));
    assert!(
        matches!(r, Err(ExtractError::Refused(ref m)) if m.contains("absolute")),
        "{r:?}"
    );
}

#[test]
fn links_and_devices_are_refused() {
    for (kind, link) in [
        (tar::EntryType::Symlink, Some("/etc/passwd")),
        (tar::EntryType::Link, Some("a")),
        (tar::EntryType::Char, None),
        (tar::EntryType::Fifo, None),
    ] {
        let t = tar_with(|b| raw_entry(b, "x", kind, link, b""));
        let (dir, r) = extract(&gz(&t));
        assert!(
            matches!(r, Err(ExtractError::Refused(_))),
            "{kind:?}: {r:?}"
        );
        assert!(
            fs::symlink_metadata(dir.path().join("x")).is_err(),
            "{kind:?} left a file"
        );
    }
}

#[test]
fn bad_gzip_and_empty_body_are_refused() {
    let (_d, r) = extract(b"{\"error\":\"open /tmp/results/x.tar.gz: no such file\"}");
    assert!(
        matches!(r, Err(ExtractError::Refused(ref m)) if m.contains("gzip")),
        "{r:?}"
    );
    let (_d, r) = extract(b"");
    assert!(
        matches!(r, Err(ExtractError::Refused(ref m)) if m.contains("empty body")),
        "{r:?}"
    );
}

#[test]
fn caps_are_enforced() {
    let t = tar_with(|b| {
        file(b, "a", &[0u8; 100]);
        file(b, "b", &[0u8; 100]);
    });
    let dir = tempfile::tempdir().unwrap();
    let small = Limits {
        max_file_bytes: 50,
        ..Limits::default()
    };
    assert!(matches!(
        extract_tar_gz(&gz(&t)[..], dir.path(), &small, &unlimited()),
        Err(ExtractError::TooLarge(_))
    ));
    let dir = tempfile::tempdir().unwrap();
    let few = Limits {
        max_entries: 1,
        ..Limits::default()
    };
    assert!(matches!(
        extract_tar_gz(&gz(&t)[..], dir.path(), &few, &unlimited()),
        Err(ExtractError::TooLarge(_))
    ));
    let dir = tempfile::tempdir().unwrap();
    let total = Limits {
        max_extracted_bytes: 150,
        ..Limits::default()
    };
    assert!(matches!(
        extract_tar_gz(&gz(&t)[..], dir.path(), &total, &unlimited()),
        Err(ExtractError::TooLarge(_))
    ));
}

#[test]
fn truncated_archive_is_refused() {
    let t = tar_with(|b| file(b, "a", &[7u8; 4096]));
    let body = gz(&t[..1024]);
    let (_d, r) = extract(&body);
    assert!(matches!(r, Err(ExtractError::Refused(_))), "{r:?}");
}

/// A header of `kind` that claims `size` bytes, followed by `data` (which may be shorter).
fn lying(b: &mut tar::Builder<Vec<u8>>, name: &str, kind: tar::EntryType, size: u64, data: &[u8]) {
    let mut h = tar::Header::new_gnu();
    h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name.as_bytes());
    h.set_size(size);
    h.set_mode(0o644);
    h.set_entry_type(kind);
    h.set_cksum();
    b.append(&h, data).unwrap();
}

fn refused_with(bytes: &[u8], needle: &str) {
    let (dir, r) = extract(bytes);
    match r {
        Err(ExtractError::Refused(ref m)) => {
            assert!(m.contains(needle), "{m}");
            assert!(
                m.len() < 400,
                "the message echoes too much: {} bytes",
                m.len()
            );
        }
        other => panic!("expected a refusal with {needle:?}, got {other:?}"),
    }
    drop(dir);
}

#[test]
fn a_name_five_thousand_levels_deep_is_refused_without_recursion() {
    let deep = format!("{}f", "a/".repeat(5000));
    let t = tar_with(|b| file(b, &deep, b"x"));
    refused_with(&gz(&t), "longer than");
    let deep = format!("{}f", "a/".repeat(MAX_DEPTH + 1));
    let t = tar_with(|b| file(b, &deep, b"x"));
    refused_with(&gz(&t), "deeper than");
    let ok = format!("{}f", "a/".repeat(MAX_DEPTH - 1));
    let t = tar_with(|b| file(b, &ok, b"x"));
    let (_d, r) = extract(&gz(&t));
    assert_eq!(r.unwrap().files, 1);
}

#[test]
fn bad_names_from_pax_and_long_name_entries_are_refused() {
    let t = tar_with(|b| {
        b.append_pax_extensions([("path", &b"a\0b"[..])]).unwrap();
        file(b, "x", b"1");
    });
    refused_with(&gz(&t), "NUL");
    let long_component = "c".repeat(300);
    let t = tar_with(|b| file(b, &format!("d/{long_component}"), b"1"));
    refused_with(&gz(&t), "component longer than 255");
    let long_path = format!("{}/f", vec!["d".repeat(200); 20].join("/"));
    let t = tar_with(|b| file(b, &long_path, b"1"));
    refused_with(&gz(&t), "longer than 3072");
    let t = tar_with(|b| {
        b.append_pax_extensions([("path", &b"../up"[..])]).unwrap();
        file(b, "innocent", b"1");
    });
    refused_with(&gz(&t), "'..'");
}

#[test]
fn mtimes_out_of_range_are_refused_not_panicked_on() {
    for base256 in [
        [
            0x80, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        ],
        [0x80, 0, 0, 0, 0x80, 0, 0, 0, 0, 0, 0, 5],
    ] {
        let t = tar_with(|b| {
            let mut h = tar::Header::new_gnu();
            h.set_size(1);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            h.as_gnu_mut().unwrap().mtime = base256;
            h.set_cksum();
            b.append_data(&mut h, "f", &b"1"[..]).unwrap();
        });
        refused_with(&gz(&t), "mtime out of range");
    }
}

#[test]
fn oversized_metadata_entries_are_refused_before_they_are_read() {
    for kind in [
        tar::EntryType::XHeader,
        tar::EntryType::GNULongName,
        tar::EntryType::GNULongLink,
        tar::EntryType::XGlobalHeader,
    ] {
        // The header claims 1 GiB; only a few bytes follow. Nothing is read or allocated.
        let t = tar_with(|b| lying(b, "meta", kind, 1 << 30, b"10 path=x\n"));
        refused_with(&gz(&t), "at most 65536");
    }
}

#[test]
fn a_pax_size_that_disagrees_with_the_header_is_refused() {
    let t = tar_with(|b| {
        b.append_pax_extensions([("size", &b"5"[..])]).unwrap();
        file(b, "f", b"1");
    });
    refused_with(&gz(&t), "disagrees");
    let t = tar_with(|b| {
        b.append_pax_extensions([("size", &b"99999999999999"[..])])
            .unwrap();
        file(b, "f", b"1");
    });
    let (_d, r) = extract(&gz(&t));
    assert!(matches!(r, Err(ExtractError::TooLarge(_))), "{r:?}");
}

#[test]
fn long_names_and_pax_paths_within_the_caps_are_extracted() {
    let name = format!("{}/file.txt", "n".repeat(200));
    let t = tar_with(|b| {
        file(b, &name, b"long");
        b.append_pax_extensions([
            ("path", "pax/é.txt".as_bytes()),
            ("mtime", &b"1700000000.5"[..]),
        ])
        .unwrap();
        file(b, "ignored", b"pax");
    });
    let (dir, r) = extract(&gz(&t));
    assert_eq!(r.unwrap().files, 2);
    assert_eq!(fs::read(dir.path().join(&name)).unwrap(), b"long");
    assert_eq!(fs::read(dir.path().join("pax/é.txt")).unwrap(), b"pax");
}

#[test]
fn a_duplicate_entry_is_refused() {
    let t = tar_with(|b| {
        file(b, "f", b"1");
        file(b, "f", b"2");
    });
    refused_with(&gz(&t), "appears twice");
}

#[test]
fn shown_names_are_cut_to_a_short_prefix() {
    let s = shown("é".repeat(10_000).as_bytes());
    assert!(s.len() < 200 && s.ends_with("(20000 bytes)"), "{s}");
}
