//! The corpus: real payloads from `events/`, the example configuration files, and the
//! regression seeds kept in `fuzz/regressions/<target>/` (inputs that once broke something,
//! minimised). Every target replays all of its seeds unmutated before fuzzing.

use std::path::{Path, PathBuf};

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// The files of `dir` whose name ends with `suffix`, sorted by name, as (name, bytes). A missing
/// directory has none.
pub fn files(dir: &Path, suffix: &str) -> Vec<(String, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<(String, Vec<u8>)> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?.to_owned();
            if name.starts_with('.') || !name.ends_with(suffix) {
                return None;
            }
            let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("cannot read seed {}: {e}", p.display()));
            Some((name, bytes))
        })
        .collect();
    found.sort();
    found
}

/// The JSON fixtures of `events/<host>/`, as (file name, bytes). Panics when there are none:
/// a target without its seeds would fuzz nothing real.
pub fn events(host: &str) -> Vec<(String, Vec<u8>)> {
    let dir = workspace().join("events").join(host);
    let found = files(&dir, ".json");
    assert!(!found.is_empty(), "no seeds in {}", dir.display());
    found
}

/// A file of the workspace, e.g. `slipway.example.toml`.
pub fn workspace_file(path: &str) -> Vec<u8> {
    let full = workspace().join(path);
    std::fs::read(&full).unwrap_or_else(|e| panic!("cannot read seed {}: {e}", full.display()))
}

/// The regression seeds of `target`: every file in `fuzz/regressions/<target>/`.
pub fn regressions(target: &str) -> Vec<Vec<u8>> {
    files(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("regressions").join(target),
        "",
    )
    .into_iter()
    .map(|(_, bytes)| bytes)
    .collect()
}
