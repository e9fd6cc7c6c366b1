//! Helpers shared by the environment tests.

use std::path::PathBuf;

/// Every `.json` file in `tests/fixtures/<folder>/` of the repository and in the
/// folder named by the environment variable `extra_var` when it is set, sorted.
pub fn fixture_files(folder: &str, extra_var: &str) -> Vec<PathBuf> {
    let mut dirs = vec![PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(folder)];
    if let Ok(extra) = std::env::var(extra_var) {
        dirs.push(PathBuf::from(extra));
    }
    let mut files = Vec::new();
    for dir in dirs {
        let entries =
            std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("directory entry").path();
            if path.extension().is_some_and(|e| e == "json") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}
