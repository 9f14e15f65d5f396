//! Writes the seed corpora: `cargo run --example seeds -- fuzz/corpus` (from the repository
//! root, with `--manifest-path fuzz/Cargo.toml`). Signatures by the ES256 key differ on every
//! run; everything else is deterministic.

use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let root = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "corpus".into()));
    for (target, name, bytes) in segl_fuzz::seeds() {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(name), bytes)?;
    }
    Ok(())
}
