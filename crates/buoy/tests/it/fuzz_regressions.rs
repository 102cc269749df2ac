//! Replays every input committed under `fuzz/regressions/<target>/` (crafted attacks and the
//! fuzzers' finds) through the same checks the fuzz targets run, so a fixed crash stays fixed
//! without a nightly toolchain.

use std::path::Path;

use crate::fuzz_checks;

#[test]
fn committed_fuzz_inputs_keep_every_invariant() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/regressions");
    let mut replayed = 0;
    for target in ["extract", "disposition", "progress", "config"] {
        let mut files: Vec<_> = std::fs::read_dir(root.join(target))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        files.sort();
        for f in files {
            let data = std::fs::read(&f).unwrap();
            let outcome = std::panic::catch_unwind(|| fuzz_checks::run(target, &data));
            assert!(
                outcome.is_ok(),
                "{target}: {} broke an invariant",
                f.display()
            );
            replayed += 1;
        }
    }
    assert!(
        replayed >= 10,
        "only {replayed} inputs found under {}",
        root.display()
    );
}
