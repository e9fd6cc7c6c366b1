//! Run logging: TensorBoard scalars written through tensorboard-rs, and a reader of
//! TensorBoard event files ([`read_scalars`]) to check or compare runs.
//!
//! tensorboard-rs queues records for a writer thread: nothing is guaranteed on disk
//! until its `SummaryWriter` is dropped, and two writers opened on one folder within
//! the same second (in one process) write to the same file name and truncate each
//! other. [`RunLogger`] therefore keeps exactly one writer per run folder, refuses a
//! second one while the first is open, waits for a fresh second before opening a
//! writer where an event file of the current second exists, and has an explicit
//! [`RunLogger::close`] that drops the writer, the only point at which the data is
//! complete on disk.

mod events;

use std::collections::HashSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context};
use tensorboard_rs::summary_writer::SummaryWriter;

pub use events::{masked_crc32c, read_event_file, read_scalars, Scalar};

/// Name of the TensorBoard subfolder of a run folder.
pub const TB_DIR: &str = "tb";

/// Prefix of the event files tensorboard-rs writes (then `seconds.host.pid.0`).
pub const EVENT_FILE_PREFIX: &str = "events.out.tfevents.";

/// The folder holding the TensorBoard event files of the run folder `run_dir`.
pub fn tb_dir(run_dir: &Path) -> PathBuf {
    run_dir.join(TB_DIR)
}

/// Folders that have an open [`RunLogger`] in this process.
fn open_dirs() -> &'static Mutex<HashSet<PathBuf>> {
    static OPEN: OnceLock<Mutex<HashSet<PathBuf>>> = OnceLock::new();
    OPEN.get_or_init(Default::default)
}

/// TensorBoard scalars of one run, written to `<run>/tb` by a single writer.
pub struct RunLogger {
    dir: PathBuf,
    writer: Option<SummaryWriter>,
    written: u64,
}

impl RunLogger {
    /// Opens the logger of the run folder `run_dir`; event files go to
    /// [`tb_dir`]`(run_dir)`, created if needed. Fails if another logger of this
    /// process has that folder open. Waits (under a second) when an event file of the
    /// current second is already there, so an earlier writer's file is never overwritten.
    pub fn create(run_dir: &Path) -> anyhow::Result<Self> {
        let dir = tb_dir(run_dir);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create the log folder {}", dir.display()))?;
        let dir = dir
            .canonicalize()
            .with_context(|| format!("cannot resolve the log folder {}", dir.display()))?;
        tempfile::tempfile_in(&dir)
            .with_context(|| format!("cannot write into the log folder {}", dir.display()))?;
        {
            let mut open = open_dirs()
                .lock()
                .map_err(|_| anyhow!("the registry of open run loggers is poisoned"))?;
            if !open.insert(dir.clone()) {
                bail!(
                    "{} already has an open run logger in this process; close it first \
                     (two TensorBoard writers in one folder overwrite each other)",
                    dir.display()
                );
            }
        }
        let opened = wait_for_fresh_second(&dir).and_then(|()| {
            catch_unwind(AssertUnwindSafe(|| SummaryWriter::new(&dir)))
                .map_err(|_| anyhow!("tensorboard-rs failed to open a writer"))
        });
        match opened {
            Ok(writer) => Ok(Self {
                dir,
                writer: Some(writer),
                written: 0,
            }),
            Err(e) => {
                unregister(&dir);
                Err(e.context(format!("cannot start logging into {}", dir.display())))
            }
        }
    }

    /// The folder of the event files (canonical path of `<run>/tb`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Number of scalars logged so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Logs `value` (stored as f32, like every TensorBoard scalar; NaN and infinities
    /// are kept) under `tag` at `step`.
    pub fn scalar(&mut self, tag: &str, step: u64, value: f64) -> anyhow::Result<()> {
        if tag.trim().is_empty() {
            bail!("a TensorBoard scalar needs a non-empty tag (step {step})");
        }
        let step_index = usize::try_from(step)
            .with_context(|| format!("step {step} of `{tag}` does not fit this platform"))?;
        let writer = self
            .writer
            .as_mut()
            .ok_or_else(|| anyhow!("the run logger of {} has failed", self.dir.display()))?;
        let sent = catch_unwind(AssertUnwindSafe(|| {
            writer.add_scalar(tag, value as f32, step_index)
        }));
        if sent.is_err() {
            // The writer thread has died (e.g. disk full): the writer is unusable.
            if let Some(w) = self.writer.take() {
                let _ = catch_unwind(AssertUnwindSafe(move || drop(w)));
            }
            bail!(
                "the TensorBoard writer of {} failed while logging `{tag}` at step {step}",
                self.dir.display()
            );
        }
        self.written += 1;
        Ok(())
    }

    /// Logs several scalars at one step.
    pub fn scalars(&mut self, step: u64, values: &[(&str, f64)]) -> anyhow::Result<()> {
        values
            .iter()
            .try_for_each(|(tag, value)| self.scalar(tag, step, *value))
    }

    /// Closes the writer: when this returns `Ok`, every scalar is on disk.
    pub fn close(mut self) -> anyhow::Result<()> {
        self.finish()
    }

    fn finish(&mut self) -> anyhow::Result<()> {
        let result = match self.writer.take() {
            Some(w) => catch_unwind(AssertUnwindSafe(move || drop(w))).map_err(|_| {
                anyhow!(
                    "the TensorBoard writer of {} failed while closing; the event file \
                     may be incomplete",
                    self.dir.display()
                )
            }),
            None => Ok(()),
        };
        unregister(&self.dir);
        result
    }
}

impl Drop for RunLogger {
    fn drop(&mut self) {
        // Errors cannot be returned from drop; `close` reports them.
        let _ = self.finish();
    }
}

fn unregister(dir: &Path) {
    if let Ok(mut open) = open_dirs().lock() {
        open.remove(dir);
    }
}

/// Returns once no event file in `dir` carries the current second in its name.
fn wait_for_fresh_second(dir: &Path) -> anyhow::Result<()> {
    loop {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .context("the system clock is before 1970")?;
        let prefix = format!("{EVENT_FILE_PREFIX}{:010}.", now.as_secs());
        let mut taken = false;
        for entry in std::fs::read_dir(dir)
            .with_context(|| format!("cannot list the log folder {}", dir.display()))?
        {
            let entry =
                entry.with_context(|| format!("cannot list the log folder {}", dir.display()))?;
            taken |= entry.file_name().to_string_lossy().starts_with(&prefix);
        }
        if !taken {
            return Ok(());
        }
        let into_second = Duration::from_nanos(u64::from(now.subsec_nanos()));
        std::thread::sleep(Duration::from_secs(1) - into_second + Duration::from_millis(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars_read_back_exactly_after_close() {
        let run = tempfile::tempdir().unwrap();
        let mut log = RunLogger::create(run.path()).unwrap();
        let values = [
            ("train/loss", 0, 0.5),
            ("train/lr", 0, 1e-4),
            ("train/loss", 1, 0.0),
            ("train/loss", 2, f64::NAN),
            ("train/grad_norm", 2, f64::INFINITY),
            ("train/grad_norm", 3, f64::NEG_INFINITY),
            ("eval/return", 1_000_000, -1234.5),
        ];
        for (tag, step, value) in values {
            log.scalar(tag, step, value).unwrap();
        }
        log.scalars(4, &[("a", 1.0), ("b", 2.0)]).unwrap();
        assert_eq!(log.written(), 9);
        let dir = log.dir().to_path_buf();
        log.close().unwrap();
        let read = read_scalars(&dir).unwrap();
        assert_eq!(read.len(), 9);
        for (got, (tag, step, value)) in read.iter().zip(values) {
            assert_eq!(got.tag, tag);
            assert_eq!(got.step, step);
            let want = value as f32;
            assert!(
                got.value.to_bits() == want.to_bits() || (got.value.is_nan() && want.is_nan()),
                "{tag}@{step}: {} != {want}",
                got.value
            );
            assert!(got.wall_time > 1.0e9);
        }
        assert_eq!((read[7].tag.as_str(), read[7].value), ("a", 1.0));
        assert_eq!((read[8].tag.as_str(), read[8].step), ("b", 4));
        assert!(dir.ends_with(TB_DIR));
    }

    #[test]
    fn second_open_logger_on_one_folder_is_refused() {
        let run = tempfile::tempdir().unwrap();
        let first = RunLogger::create(run.path()).unwrap();
        let err = RunLogger::create(run.path()).err().unwrap();
        assert!(format!("{err:#}").contains("already has an open run logger"));
        first.close().unwrap();
    }

    #[test]
    fn reopening_in_the_same_second_keeps_both_files() {
        let run = tempfile::tempdir().unwrap();
        let mut first = RunLogger::create(run.path()).unwrap();
        first.scalar("x", 1, 1.0).unwrap();
        first.close().unwrap();
        let mut second = RunLogger::create(run.path()).unwrap();
        second.scalar("x", 2, 2.0).unwrap();
        second.close().unwrap();
        let files = std::fs::read_dir(tb_dir(run.path())).unwrap().count();
        assert_eq!(files, 2, "the second writer must not reuse the first file");
        let read = read_scalars(&tb_dir(run.path())).unwrap();
        let steps: Vec<(u64, f32)> = read.iter().map(|s| (s.step, s.value)).collect();
        assert_eq!(steps, vec![(1, 1.0), (2, 2.0)]);
    }

    #[test]
    fn dropping_without_close_still_writes_everything() {
        let run = tempfile::tempdir().unwrap();
        let mut log = RunLogger::create(run.path()).unwrap();
        for step in 0..100 {
            log.scalar("train/loss", step, step as f64 * 0.25).unwrap();
        }
        let dir = log.dir().to_path_buf();
        drop(log);
        let read = read_scalars(&dir).unwrap();
        assert_eq!(read.len(), 100);
        assert_eq!(read[99].value, 99.0 * 0.25);
        // Dropping released the folder: a new logger may open it.
        RunLogger::create(run.path()).unwrap().close().unwrap();
    }

    #[test]
    fn empty_tag_is_refused() {
        let run = tempfile::tempdir().unwrap();
        let mut log = RunLogger::create(run.path()).unwrap();
        let err = log.scalar(" ", 3, 1.0).unwrap_err();
        assert!(err.to_string().contains("non-empty tag"));
        log.close().unwrap();
    }
}
