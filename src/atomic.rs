//! Atomic file output: write to a temporary file beside the target, then rename,
//! so a crash or an error never leaves a half-written file under the final name.

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context};

/// Start of the name of every temporary file [`write_atomic`] creates.
const TMP_PREFIX: &str = ".flowrl-";
/// End of the name of every temporary file [`write_atomic`] creates.
const TMP_SUFFIX: &str = ".tmp";

/// Whether `name` is the name of a temporary file of [`write_atomic`] (one left behind
/// by an interrupted write is stale).
pub fn is_temporary(name: &str) -> bool {
    name.len() > TMP_PREFIX.len() + TMP_SUFFIX.len()
        && name.starts_with(TMP_PREFIX)
        && name.ends_with(TMP_SUFFIX)
}

/// Writes a file atomically: `fill` writes the whole content into a temporary file in
/// the target's folder, which is synced and renamed onto `path` only if `fill` succeeds.
/// On error the temporary file is removed and `path` is left untouched.
pub fn write_atomic<F>(path: &Path, fill: F) -> anyhow::Result<()>
where
    F: FnOnce(&mut dyn Write) -> anyhow::Result<()>,
{
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create folder {}", dir.display()))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(TMP_PREFIX)
        .suffix(TMP_SUFFIX)
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
    {
        let mut out = std::io::BufWriter::new(tmp.as_file_mut());
        fill(&mut out).with_context(|| format!("while writing {}", path.display()))?;
        out.flush()
            .with_context(|| format!("while writing {}", path.display()))?;
    }
    tmp.as_file()
        .sync_all()
        .with_context(|| format!("while syncing {}", path.display()))?;
    set_final_permissions(tmp.as_file(), path)
        .with_context(|| format!("cannot set permissions of {}", path.display()))?;
    tmp.persist(path)
        .with_context(|| format!("cannot move the finished file to {}", path.display()))?;
    Ok(())
}

/// Gives the finished file the permissions of the file it replaces, or the usual
/// `rw-r--r--` for a new file (temporary files are created owner-only).
fn set_final_permissions(file: &std::fs::File, path: &Path) -> std::io::Result<()> {
    let permissions = match std::fs::metadata(path) {
        Ok(existing) => existing.permissions(),
        Err(_) => default_permissions(file)?,
    };
    file.set_permissions(permissions)
}

#[cfg(unix)]
fn default_permissions(_file: &std::fs::File) -> std::io::Result<std::fs::Permissions> {
    use std::os::unix::fs::PermissionsExt;
    Ok(std::fs::Permissions::from_mode(0o644))
}

#[cfg(not(unix))]
fn default_permissions(file: &std::fs::File) -> std::io::Result<std::fs::Permissions> {
    Ok(file.metadata()?.permissions())
}

/// Checks, before any work, that `out` (given by the command-line flag `flag`) may
/// be written: it is not a folder, its folder exists or can be created, it is not one
/// of `inputs` (same file, through any path, symlink or hard link; or a file inside
/// an input folder), and it does not exist yet unless `force`.
pub fn check_output(out: &Path, flag: &str, inputs: &[&Path], force: bool) -> anyhow::Result<()> {
    let shown = out.display();
    if out.is_dir() {
        bail!("{flag} {shown}: expected a file path, found a folder");
    }
    let mut ancestor = out.parent();
    while let Some(dir) = ancestor.filter(|d| !d.as_os_str().is_empty()) {
        if dir.is_dir() {
            break;
        }
        if dir.exists() {
            bail!(
                "{flag} {shown}: cannot create its folder: {} is not a folder",
                dir.display()
            );
        }
        ancestor = dir.parent();
    }
    let exists = std::fs::symlink_metadata(out).is_ok();
    for input in inputs {
        let inside_input_folder = exists
            && input.is_dir()
            && matches!(
                (out.canonicalize(), input.canonicalize()),
                (Ok(o), Ok(i)) if o.starts_with(&i)
            );
        if same_file(out, input) || inside_input_folder {
            bail!(
                "{flag} {shown} is the input {}: writing it would destroy what is being read; \
                 choose another output path",
                input.display()
            );
        }
    }
    if exists && !force {
        bail!("{flag} {shown} already exists; pass --force to overwrite it");
    }
    Ok(())
}

/// Whether `a` and `b` name the same existing file (identity, not spelling).
#[cfg(unix)]
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => (x.dev(), x.ino()) == (y.dev(), y.ino()),
        _ => false,
    }
}

/// Whether `a` and `b` name the same existing file (canonical paths).
#[cfg(not(unix))]
fn same_file(a: &Path, b: &Path) -> bool {
    matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y)
}

/// Writes `bytes` to `path` atomically (see [`write_atomic`]).
pub fn write_bytes_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    write_atomic(path, |w| Ok(w.write_all(bytes)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_write_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.bin");
        let err = write_atomic(&target, |w| {
            w.write_all(b"partial")?;
            anyhow::bail!("boom")
        })
        .unwrap_err();
        assert!(format!("{err:#}").contains("boom"));
        assert!(!target.exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn successful_write_replaces_the_target() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.bin");
        std::fs::write(&target, b"old").unwrap();
        write_bytes_atomic(&target, b"new").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[cfg(unix)]
    #[test]
    fn new_files_are_world_readable_and_replaced_files_keep_their_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let fresh = dir.path().join("fresh.bin");
        write_bytes_atomic(&fresh, b"x").unwrap();
        let mode = std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);

        let kept = dir.path().join("kept.bin");
        std::fs::write(&kept, b"old").unwrap();
        std::fs::set_permissions(&kept, std::fs::Permissions::from_mode(0o600)).unwrap();
        write_bytes_atomic(&kept, b"new").unwrap();
        let mode = std::fs::metadata(&kept).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
