//! Criterion benchmarks of the aggregator's hot paths: extracting an uploaded tarball, encoding
//! the status of 5,000 nodes × 3 plugins with progress (in full and bounded to the annotation
//! limit), merging progress updates, and sealing a run directory into a hashed tarball, beside
//! `tar czf | sha256sum` on the same tree. `cargo bench -p buoy-aggregator --bench hot_paths`.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use buoy_aggregator::budget::{DiskBudget, FreeSpaceProbe};
use buoy_aggregator::extract::{self, Limits};
use buoy_aggregator::seal;
use buoy_aggregator::state::RunState;
use buoy_wire::status::{Detail, ANNOTATION_LIMIT};
use buoy_wire::{ProgressInput, ProgressUpdate, ResultKey};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

/// Bytes that compress about as well as real logs: half random, half text.
fn mixed(n: usize, seed: &mut u64) -> Vec<u8> {
    (0..n)
        .map(|i| {
            *seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            if i % 2 == 0 {
                (*seed >> 56) as u8
            } else {
                b"node log line "[i % 14]
            }
        })
        .collect()
}

fn extraction(c: &mut Criterion) {
    let mut seed = 1;
    let mut tar = tar::Builder::new(Vec::new());
    for i in 0..64 {
        let data = mixed(64 << 10, &mut seed);
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, format!("results/f{i}.bin"), &data[..])
            .unwrap();
    }
    let raw = tar.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&raw).unwrap();
    let body = gz.finish().unwrap();
    let root = tempfile::tempdir().unwrap();
    let budget = DiskBudget::new(root.path(), u64::MAX, 0, 0, FreeSpaceProbe::default());
    let mut g = c.benchmark_group("extract");
    g.throughput(Throughput::Bytes(raw.len() as u64));
    let mut n = 0u64;
    g.bench_function("tar.gz of 64 x 64 KiB", |b| {
        b.iter_batched(
            || {
                n += 1;
                let d = root.path().join(format!("u{n}"));
                std::fs::create_dir(&d).unwrap();
                d
            },
            |dest| {
                extract::extract_tar_gz(&body[..], &dest, &Limits::default(), &budget).unwrap();
                dest
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

fn big_state() -> RunState {
    let mut keys = Vec::new();
    for p in ["systemd-logs", "node-facts", "cis-bench"] {
        keys.extend((0..5000).map(|i| ResultKey::new(p, format!("node-{i:05}"))));
    }
    let mut s = RunState::new(keys.clone());
    for (i, k) in keys.iter().enumerate() {
        let body = format!(
            r#"{{"msg":"checked {i} of 400","total":400,"completed":{}}}"#,
            i % 400
        );
        let u = ProgressInput::decode(body.as_bytes()).unwrap().into_update(
            &k.plugin,
            &k.node,
            "2026-11-25T00:00:00Z".into(),
        );
        s.record_progress(k, u).unwrap();
    }
    s
}

fn status(c: &mut Criterion) {
    let s = big_state();
    let mut g = c.benchmark_group("status 5,000 nodes x 3 plugins");
    g.bench_function("full JSON", |b| {
        b.iter(|| serde_json::to_string(&s.status()).unwrap().len())
    });
    g.bench_function("bounded to the annotation limit", |b| {
        b.iter(|| {
            s.status()
                .to_bounded_json(ANNOTATION_LIMIT, Detail::Full)
                .0
                .len()
        })
    });
    g.bench_function("overview", |b| {
        b.iter(|| s.overview().build("running".into(), None).plugins.len())
    });
    g.finish();
}

fn progress_merge(c: &mut Criterion) {
    let update = |json: &str| {
        ProgressInput::decode(json.as_bytes()).unwrap().into_update(
            "e2e",
            "global",
            "2026-11-25T00:00:00Z".into(),
        )
    };
    let base = ProgressUpdate::merge(None, update(r#"{"msg":"start","total":5000}"#));
    let append =
        update(r#"{"msg":"ran one","appendcompleted":1,"appendfailing":["[sig-x] a test"]}"#);
    let mut g = c.benchmark_group("progress merge");
    g.bench_function("append one completed and one failing", |b| {
        b.iter_batched(
            || append.clone(),
            |a| ProgressUpdate::merge(Some(&base), a),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("decode and merge a plain update", |b| {
        b.iter(|| {
            ProgressUpdate::merge(
                Some(&base),
                update(r#"{"msg":"ran 10","total":5000,"completed":10}"#),
            )
        })
    });
    g.finish();
}

fn tree(root: &Path) -> u64 {
    let mut seed = 7;
    let mut bytes = 0;
    for i in 0..400 {
        let d = root.join(format!("plugins/p/results/n{i:04}"));
        std::fs::create_dir_all(&d).unwrap();
        let data = mixed(64 << 10, &mut seed);
        bytes += data.len() as u64;
        std::fs::write(d.join("r.bin"), data).unwrap();
    }
    bytes
}

fn sealing(c: &mut Criterion) {
    let d = tempfile::tempdir().unwrap();
    let run = d.path().join("run");
    let bytes = tree(&run);
    let out = d.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let mut g = c.benchmark_group("seal 400 x 64 KiB");
    g.throughput(Throughput::Bytes(bytes));
    g.sample_size(10);
    g.bench_function("buoy: tar, gzip on every core, SHA-256", |b| {
        b.iter(|| seal::write_tarball(&run, &out, "x.tar.gz").unwrap().1.size)
    });
    let script = format!("tar czf - -C '{}' . | sha256sum > /dev/null", run.display());
    let have_tar = std::process::Command::new("sh")
        .args(["-c", &script])
        .status()
        .is_ok_and(|s| s.success());
    if have_tar {
        g.bench_function("tar czf | sha256sum", |b| {
            b.iter(|| {
                std::process::Command::new("sh")
                    .args(["-c", &script])
                    .status()
                    .unwrap()
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = hot;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = extraction, status, progress_merge, sealing
}
criterion_main!(hot);
