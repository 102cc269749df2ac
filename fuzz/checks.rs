//! The invariants each fuzz target checks, shared by the targets in `fuzz_targets/` and by the
//! test that replays every committed input in `regressions/<target>/` under `cargo test`
//! (`crates/buoy/tests/it/fuzz_regressions.rs`). Each check takes arbitrary bytes and panics
//! only when Buoy breaks a promise: a panic of its own, a client's input answered as our own
//! failure (500), something other than a regular file or directory written, a refused upload
//! leaving anything behind, or a bound not kept.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use buoy_aggregator::budget::{DiskBudget, FreeSpaceProbe};
use buoy_aggregator::extract::{self, ExtractError, Limits};
use buoy_aggregator::store::Store;

/// Runs the check named `target` on `data`.
pub fn run(target: &str, data: &[u8]) {
    match target {
        "extract" => extract(data),
        "disposition" => disposition(data),
        "progress" => progress(data),
        "config" => config(data),
        other => panic!("no fuzz target {other:?}"),
    }
}

fn store() -> &'static Store {
    static STORE: OnceLock<(tempfile::TempDir, Store)> = OnceLock::new();
    &STORE
        .get_or_init(|| {
            let d = tempfile::tempdir().expect("a temporary directory");
            let s = Store::open(&d.path().join("run"), &d.path().join("staging")).expect("store");
            (d, s)
        })
        .1
}

/// The upload path of a gzip result: staging directory, extraction, discard. The first byte
/// picks the body: 0 sends the rest as it is (the gzip layer is fuzzed too), anything else
/// gzips the rest (so the tar layer is reached).
pub fn extract(data: &[u8]) {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let body = if mode == 0 {
        rest.to_vec()
    } else {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(rest).expect("gzip into memory");
        e.finish().expect("gzip into memory")
    };
    let store = store();
    let staged = store
        .stage(NEXT.fetch_add(1, Ordering::Relaxed))
        .expect("a staging dir");
    let limits = Limits {
        max_upload_bytes: 1 << 20,
        max_extracted_bytes: 4 << 20,
        max_entries: 2_000,
        max_file_bytes: 1 << 20,
    };
    let free = FreeSpaceProbe(std::sync::Arc::new(|_: &Path| Ok(u64::MAX)));
    let budget = DiskBudget::new(store.run_dir(), 8 << 20, 0, 0, free);
    let result = extract::extract_tar_gz(&body[..], &staged, &limits, &budget);
    if let Err(ExtractError::Io { context, source }) = &result {
        panic!("client input answered as our own failure: {context}: {source}");
    }
    let mut files = 0;
    let mut stack = vec![staged.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read staging") {
            let e = e.expect("read staging");
            let t = e.file_type().expect("file type");
            assert!(
                t.is_dir() || t.is_file(),
                "{:?} is neither file nor dir",
                e.path()
            );
            if t.is_dir() {
                stack.push(e.path());
            } else {
                files += 1;
            }
        }
    }
    if let Ok(stats) = &result {
        assert_eq!(stats.files, files, "every extracted file is counted");
    }
    store.discard(&staged);
    assert!(!staged.exists(), "a discarded upload leaves nothing");
    assert_eq!(budget.used(), result.map(|s| s.bytes).unwrap_or(0));
}

/// A `content-disposition` value always yields a safe base name.
pub fn disposition(data: &[u8]) {
    let Ok(header) = std::str::from_utf8(data) else {
        return;
    };
    let name = buoy_wire::disposition::stored_filename(Some(header));
    assert!(!name.is_empty() && name.len() <= 255, "{name:?}");
    assert!(name != "." && name != "..", "{name:?}");
    assert!(!name.contains(['/', '\0']), "{name:?}");
}

/// A sequence of progress bodies (split at 0xff bytes) merged by the append rule: whatever
/// they say, what the key keeps stays within its bounds and shows as JSON.
pub fn progress(data: &[u8]) {
    use buoy_wire::progress::{ProgressInput, ProgressUpdate, MAX_LIST_BYTES, MAX_MSG_BYTES};
    let mut kept: Option<ProgressUpdate> = None;
    for body in data.split(|b| *b == 0xff) {
        let Ok(input) = ProgressInput::decode(body) else {
            continue;
        };
        let update = input.into_update("p", "n", "t".into());
        let merged = ProgressUpdate::merge(kept.as_ref(), update);
        assert!(merged.msg.len() <= MAX_MSG_BYTES);
        let lists: usize = [&merged.errors, &merged.failures, &merged.appendfailing]
            .iter()
            .flat_map(|l| l.iter())
            .map(String::len)
            .sum();
        assert!(lists <= MAX_LIST_BYTES, "{lists}");
        serde_json::to_vec(&merged.for_status()).expect("a status row encodes");
        kept = Some(merged);
    }
}

struct NoEnv;

impl buoy_kube::config::Env for NoEnv {
    fn var(&self, _: &str) -> Option<String> {
        None
    }
}

/// `config.json` and plugin manifests: parsed or refused with an error, never a panic. The
/// first byte picks which.
pub fn config(data: &[u8]) {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    if which % 2 == 0 {
        let _ = buoy_wire::manifest::Manifest::parse(Path::new("fuzz.yaml"), text);
    } else if let Ok(c) = buoy_kube::config::ClusterConfig::parse(None, text, &NoEnv) {
        let _ = c.advertise_host();
        let _ = c.plugin_timeout();
    }
}
