//! Downloads and verifies the default model into the default cache (or the directory given as the
//! first argument) and prints its path: `cargo run -p cocoon-infer --example fetch_model`.

use std::path::PathBuf;

fn main() -> Result<(), cocoon_infer::InferError> {
    let dir = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(cocoon_infer::default_cache_dir);
    let path = cocoon_infer::fetch_default_model(&dir)?;
    println!("{}", path.display());
    Ok(())
}
