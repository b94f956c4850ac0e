//! The real model for end-to-end tests of the embedded engine.

use std::path::PathBuf;

/// The model `cocoon model fetch` leaves (or `COCOON_MODEL_PATH`). Without it a test says so and
/// passes, except on CI (`CI` set), where a missing model is a failure.
pub fn model_path() -> Option<PathBuf> {
    let path = std::env::var_os("COCOON_MODEL_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| cocoon_infer::default_model_path(&cocoon_infer::default_cache_dir()));
    if path.is_file() {
        return Some(path);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "the model is missing at {} (run `cocoon model fetch`)",
        path.display()
    );
    eprintln!("skipped: model not present at {}", path.display());
    None
}
