//! The journal's tests: records written and replayed, batches padded to the page, torn and
//! dirty tails, windows larger and smaller than a record, the buffered path, and lay-out.

use super::*;

/// A temporary directory holding an empty run directory and staging directory.
fn dirs() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let (run, staging) = (d.path().join("run"), d.path().join("staging"));
    fs::create_dir_all(&run).unwrap();
    fs::create_dir_all(&staging).unwrap();
    (d, run, staging)
}

fn record(target: &str, name: &str, data: &[u8]) -> Vec<u8> {
    let mut r = header(target, name, data);
    r.extend_from_slice(data);
    r
}

#[test]
fn replay_lays_out_whole_records_and_drops_a_torn_tail() {
    let (_d, run, staging) = dirs();
    // An earlier lay-out of n1 that was never synced: replay replaces it.
    fs::create_dir_all(run.join("plugins/p/results/n1")).unwrap();
    fs::write(run.join("plugins/p/results/n1/stale"), b"").unwrap();
    let mut j = record("plugins/p/results/n1", "result.txt", b"one");
    j.extend(record("plugins/p/results/n2", "r", &[7u8; 5000]));
    let torn = record("plugins/p/results/n3", "r", b"three");
    j.extend_from_slice(&torn[..torn.len() - 2]);
    let path = staging.join("journal");
    fs::write(&path, &j).unwrap();
    assert_eq!(replay(&path, &run, &staging).unwrap().records, 2);
    let n1: Vec<_> = fs::read_dir(run.join("plugins/p/results/n1"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(n1, ["result.txt"]);
    assert_eq!(
        fs::read(run.join("plugins/p/results/n1/result.txt")).unwrap(),
        b"one"
    );
    assert_eq!(
        fs::read(run.join("plugins/p/results/n2/r")).unwrap(),
        [7u8; 5000]
    );
    assert!(!run.join("plugins/p/results/n3").exists());
}

#[test]
fn a_damaged_record_is_never_laid_out_nor_anything_outside_the_results() {
    let (d, run, staging) = dirs();
    let mut flipped = record("plugins/p/results/n1", "r", b"data");
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    let path = staging.join("journal");
    fs::write(&path, &flipped).unwrap();
    assert_eq!(replay(&path, &run, &staging).unwrap().records, 0);
    for target in ["plugins/../../x", "/etc/x/results/y", "plugins/p/errors/n1"] {
        fs::write(&path, record(target, "r", b"x")).unwrap();
        assert_eq!(
            replay(&path, &run, &staging).unwrap().records,
            0,
            "{target}"
        );
    }
    fs::write(&path, record("plugins/p/results/n1", "../r", b"x")).unwrap();
    assert_eq!(replay(&path, &run, &staging).unwrap().records, 0);
    assert!(!run.join("plugins").exists());
    assert_eq!(
        replay(&d.path().join("none"), &run, &staging)
            .unwrap()
            .records,
        0
    );
}

/// Every prefix of a journal, and copies with single bytes changed: replay never panics,
/// lays out exactly the whole records (a prefix: those it holds whole; a changed byte: every
/// record but the one it is in, which is reported lost unless it is the last), and writes
/// nothing but result directories.
#[test]
fn replay_of_any_cut_or_damaged_journal_keeps_every_whole_record() {
    let (d, _, _) = dirs();
    let mut whole = Vec::new();
    let mut ends = Vec::new();
    for i in 0..3 {
        let data = vec![b'a' + i as u8; 40 + i * 7];
        whole.extend(record(&format!("plugins/p/results/n{i}"), "f", &data));
        ends.push(whole.len());
    }
    let record_of = |at: usize| ends.iter().position(|e| at < *e).unwrap();
    // Per record: laid out, not laid out, or either (a changed byte that reads the same, an
    // upper-case hex digit of its checksum, say).
    let mut cases: Vec<(Vec<u8>, Vec<Option<bool>>)> = (0..=whole.len())
        .map(|n| {
            (
                whole[..n].to_vec(),
                ends.iter().map(|e| Some(*e <= n)).collect(),
            )
        })
        .collect();
    let mut x: u32 = 12345;
    for _ in 0..300 {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let mut c = whole.clone();
        let at = (x as usize >> 8) % c.len();
        c[at] = c[at].wrapping_add(1 + (x as u8 % 255));
        let hit = record_of(at);
        cases.push((c, (0..3).map(|k| (k != hit).then_some(true)).collect()));
    }
    for (i, (case, kept)) in cases.iter().enumerate() {
        let (run, staging) = (
            d.path().join(format!("r{i}")),
            d.path().join(format!("s{i}")),
        );
        fs::create_dir_all(&run).unwrap();
        fs::create_dir_all(&staging).unwrap();
        let path = staging.join("journal");
        fs::write(&path, case).unwrap();
        let got = replay(&path, &run, &staging).unwrap();
        let mut laid = Vec::new();
        for (k, want) in kept.iter().enumerate() {
            let f = run.join(format!("plugins/p/results/n{k}/f"));
            if let Some(want) = want {
                assert_eq!(f.exists(), *want, "case {i}: n{k}");
            }
            if f.exists() {
                assert_eq!(fs::read(&f).unwrap(), vec![b'a' + k as u8; 40 + k * 7]);
            }
            laid.push(f.exists());
        }
        assert_eq!(got.records, laid.iter().filter(|l| **l).count(), "case {i}");
        // A record lost before a whole one is reported; one lost at the end is a torn tail.
        let last = laid.iter().rposition(|l| *l);
        let lost_before_whole = laid
            .iter()
            .enumerate()
            .any(|(k, l)| !l && last.is_some_and(|last| k < last));
        if lost_before_whole {
            assert!(
                got.damaged > 0 && got.damaged_records > 0,
                "case {i}: {got:?}"
            );
        }
        let top: Vec<_> = fs::read_dir(&run)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(top.is_empty() || top == ["plugins"], "case {i}: {top:?}");
    }
}

#[test]
fn appended_records_are_laid_out_and_the_journal_empties_once_synced() {
    let (_d, run, staging) = dirs();
    let mut j = Journal::new(&staging.join("journal"));
    let answers = j.append(
        &run,
        &[
            ("plugins/p/results/n1", "a", b"1"),
            ("plugins/p/results/n2", "b", b"22"),
            ("plugins/p/results/n1", "a", b"again"),
        ],
    );
    assert!(answers[0].is_ok() && answers[1].is_ok());
    assert_eq!(
        answers[2].as_ref().unwrap_err().kind(),
        io::ErrorKind::AlreadyExists
    );
    // What was acknowledged is in the journal before anything is laid out.
    assert!(!run.join("plugins/p/results/n1").exists());
    let mut parents = HashSet::new();
    assert_eq!(j.lay_out(1, &run, &staging, &mut parents).unwrap(), 1);
    let dir = File::open(&run).unwrap();
    j.settle(&dir).unwrap();
    assert!(fs::metadata(staging.join("journal")).unwrap().len() > 0);
    assert_eq!(j.lay_out(10, &run, &staging, &mut parents).unwrap(), 1);
    j.settle(&dir).unwrap();
    assert_eq!(fs::metadata(staging.join("journal")).unwrap().len(), 0);
    assert_eq!(fs::read(run.join("plugins/p/results/n2/b")).unwrap(), b"22");
    // Laid out, a target is refused from the tree as before.
    let again = j.append(&run, &[("plugins/p/results/n2", "b", b"x")]);
    assert_eq!(
        again[0].as_ref().unwrap_err().kind(),
        io::ErrorKind::AlreadyExists
    );
    // Nothing replay would refuse is ever written.
    let refused = j.append(&run, &[("plugins/p/results/n4", "../x", b"x")]);
    assert_eq!(
        refused[0].as_ref().unwrap_err().kind(),
        io::ErrorKind::InvalidInput
    );
    // Records after an emptying land where they are read back from.
    assert!(j.append(&run, &[("plugins/p/results/n3", "c", b"333")])[0].is_ok());
    assert_eq!(j.lay_out(10, &run, &staging, &mut parents).unwrap(), 1);
    assert_eq!(
        fs::read(run.join("plugins/p/results/n3/c")).unwrap(),
        b"333"
    );
    assert_eq!(
        fs::read_dir(&staging).unwrap().count(),
        1,
        "only the journal"
    );
}

/// One batch's records go out in one write, more of them than one `writev` takes
/// (1,024 slices), with refused ones among them: each accepted record is read back from
/// where it landed, by the lay-out and by a replay alike.
#[test]
fn a_large_batch_is_written_whole_and_every_record_lands_where_it_is_read_back() {
    let (_d, run, staging) = dirs();
    let path = staging.join("journal");
    let mut j = Journal::new(&path);
    let items: Vec<(String, String, Vec<u8>)> = (0..700)
        .map(|i| {
            let name = if i % 100 == 7 { "../x" } else { "r" };
            let data = vec![(i % 251) as u8; 1 + i * 13 % 3000];
            (format!("plugins/p/results/n{i}"), name.to_string(), data)
        })
        .collect();
    let writes: Vec<(&str, &str, &[u8])> = items
        .iter()
        .map(|(t, n, d)| (t.as_str(), n.as_str(), &d[..]))
        .collect();
    let answers = j.append(&run, &writes);
    for (i, a) in answers.iter().enumerate() {
        assert_eq!(a.is_ok(), i % 100 != 7, "record {i}: {a:?}");
    }
    // A replay of the journal as written finds the same records as the lay-out.
    let (other, other_staging) = (run.with_file_name("replayed"), staging.join("replay"));
    fs::create_dir_all(&other).unwrap();
    fs::create_dir_all(&other_staging).unwrap();
    assert_eq!(replay(&path, &other, &other_staging).unwrap().records, 693);
    let mut parents = HashSet::new();
    assert_eq!(
        j.lay_out(usize::MAX, &run, &staging, &mut parents).unwrap(),
        693
    );
    for (i, (target, _, data)) in items.iter().enumerate().filter(|(i, _)| i % 100 != 7) {
        for root in [&run, &other] {
            let got = fs::read(root.join(target).join("r")).unwrap();
            assert!(got == *data, "record {i} under {}", root.display());
        }
    }
}

/// Batches are padded to `ALIGN` with zeros; a replay steps over the padding between
/// them and stops at zeros where no batch ends. Where the file system takes direct I/O,
/// the journal writes with it.
#[test]
fn replay_steps_over_the_padding_between_batches() {
    let (_d, run, staging) = dirs();
    let path = staging.join("journal");
    let mut j = Journal::new(&path);
    for b in 0..3u8 {
        let t = format!("plugins/p/results/n{b}");
        let data = vec![b + 1; 100 + b as usize * 5000];
        assert!(j.append(&run, &[(t.as_str(), "r", &data)])[0].is_ok());
        assert_eq!(j.len % ALIGN as u64, 0, "batch {b} ends aligned");
    }
    let probe = fs::File::create(staging.join("probe")).unwrap();
    assert_eq!(
        j.direct,
        set_direct(&probe, true).is_ok(),
        "direct I/O wherever it is offered"
    );
    let mut bytes = fs::read(&path).unwrap();
    assert_eq!(bytes.len() as u64, j.len);
    let (other, other_staging) = (run.with_file_name("replayed"), staging.join("replay"));
    fs::create_dir_all(&other).unwrap();
    fs::create_dir_all(&other_staging).unwrap();
    assert_eq!(replay(&path, &other, &other_staging).unwrap().records, 3);
    for b in 0..3u8 {
        let got = fs::read(other.join(format!("plugins/p/results/n{b}/r"))).unwrap();
        assert_eq!(got, vec![b + 1; 100 + b as usize * 5000]);
    }
    // A page of zeros at an aligned offset (space a torn write left), or padding that is not
    // zeros, is stepped over: the whole records after it are laid out, and it is reported.
    let second = ALIGN; // the first batch is one page
    let mut torn = bytes[..second].to_vec();
    torn.extend(vec![0u8; ALIGN]);
    torn.extend(&bytes[second..]);
    fs::write(&path, &torn).unwrap();
    let fresh = |n: &str| {
        let (r, s) = (run.with_file_name(format!("r-{n}")), staging.join(n));
        fs::create_dir_all(&r).unwrap();
        fs::create_dir_all(&s).unwrap();
        (r, s)
    };
    let (r1, s1) = fresh("torn");
    let got = replay(&path, &r1, &s1).unwrap();
    assert_eq!((got.records, got.damaged, got.damaged_records), (3, 1, 0));
    let last = second - 1;
    assert_eq!(bytes[last], 0, "the first batch ends in padding");
    bytes[last] = b'x';
    fs::write(&path, &bytes).unwrap();
    let (r2, s2) = fresh("dirty");
    let got = replay(&path, &r2, &s2).unwrap();
    assert_eq!((got.records, got.damaged), (3, 1));
}

/// Records are read back a window at a time; one larger than a window, and the records
/// on either side of it, are laid out whole all the same.
#[test]
fn a_record_larger_than_the_read_window_is_laid_out_whole() {
    let (_d, run, staging) = dirs();
    let mut j = Journal::new(&staging.join("journal"));
    let big: Vec<u8> = (0..CHUNK + 3 * ALIGN + 17)
        .map(|i| (i % 253) as u8)
        .collect();
    let writes: [(&str, &str, &[u8]); 3] = [
        ("plugins/p/results/a", "r", b"before"),
        ("plugins/p/results/b", "r", &big),
        ("plugins/p/results/c", "r", b"after"),
    ];
    assert!(j.append(&run, &writes).iter().all(|a| a.is_ok()));
    let mut parents = HashSet::new();
    assert_eq!(j.lay_out(10, &run, &staging, &mut parents).unwrap(), 3);
    for (target, name, data) in writes {
        let got = fs::read(run.join(target).join(name)).unwrap();
        assert!(got == data, "{target}");
    }
}

/// Where direct I/O is refused, the journal is buffered and works the same: written,
/// laid out, replayed (direct I/O is turned off by hand here, as on a file system
/// without it).
#[test]
#[cfg(target_os = "linux")]
fn a_buffered_journal_works_the_same() {
    let (_d, run, staging) = dirs();
    let path = staging.join("journal");
    let mut j = Journal::new(&path);
    j.file().unwrap();
    set_direct(j.file.as_ref().unwrap(), false).unwrap();
    j.direct = false;
    for b in 0..2u8 {
        let t = format!("plugins/p/results/n{b}");
        assert!(j.append(&run, &[(t.as_str(), "r", &[b; 5000])])[0].is_ok());
        assert_eq!(j.len % ALIGN as u64, 0);
    }
    let flags = nix::fcntl::fcntl(j.file.as_ref().unwrap(), nix::fcntl::FcntlArg::F_GETFL);
    let flags = nix::fcntl::OFlag::from_bits_truncate(flags.unwrap());
    assert!(!flags.contains(nix::fcntl::OFlag::O_DIRECT));
    let (other, other_staging) = (run.with_file_name("replayed"), staging.join("replay"));
    fs::create_dir_all(&other).unwrap();
    fs::create_dir_all(&other_staging).unwrap();
    assert_eq!(replay(&path, &other, &other_staging).unwrap().records, 2);
    let mut parents = HashSet::new();
    assert_eq!(j.lay_out(10, &run, &staging, &mut parents).unwrap(), 2);
    for b in 0..2u8 {
        for root in [&run, &other] {
            let got = fs::read(root.join(format!("plugins/p/results/n{b}/r"))).unwrap();
            assert_eq!(got, vec![b; 5000]);
        }
    }
}
