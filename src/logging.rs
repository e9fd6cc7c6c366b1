//! Run logging: TensorBoard scalars in event files, and a reader of TensorBoard event
//! files ([`read_scalars`]) to check or compare runs.
//!
//! [`RunLogger`] writes the event records itself, synchronously (TFRecord framing and
//! the few protobuf fields of a scalar `Event`), so every write error, a full disk
//! say, comes back as an error naming the file; tensorboard-rs wrote from a thread
//! that panicked on such errors. Each record is handed to the operating system as it
//! is logged. One logger per run folder is open at a time in a process, event files
//! are created new (never truncating another), and a logger waits for a fresh second
//! before opening where an event file of the current second exists, so file-name order
//! is creation order.

mod events;

use std::collections::HashSet;
use std::fs::File;
use std::io::{Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context};

pub use events::{drop_steps_after, masked_crc32c, read_event_file, read_scalars, Scalar};

/// Name of the TensorBoard subfolder of a run folder.
pub const TB_DIR: &str = "tb";

/// Prefix of the event files (then `seconds.flowrl.pid.0`).
pub const EVENT_FILE_PREFIX: &str = "events.out.tfevents.";

/// Whether `name` is the name of a TensorBoard event file.
pub fn is_event_file(name: &str) -> bool {
    name.starts_with(EVENT_FILE_PREFIX)
}

/// The folder holding the TensorBoard event files of the run folder `run_dir`.
pub fn tb_dir(run_dir: &Path) -> PathBuf {
    run_dir.join(TB_DIR)
}

/// Folders that have an open [`RunLogger`] in this process.
fn open_dirs() -> &'static Mutex<HashSet<PathBuf>> {
    static OPEN: OnceLock<Mutex<HashSet<PathBuf>>> = OnceLock::new();
    OPEN.get_or_init(Default::default)
}

/// Seconds since the Unix epoch.
fn now() -> anyhow::Result<Duration> {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("the system clock is before 1970")
}

/// TensorBoard scalars of one run, written to `<run>/tb` by a single writer.
pub struct RunLogger {
    dir: PathBuf,
    /// The event file and its path; `None` once a write has failed.
    file: Option<(File, PathBuf)>,
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
        let opened = wait_for_fresh_second(&dir).and_then(|secs| {
            let path = dir.join(format!(
                "{EVENT_FILE_PREFIX}{secs:010}.flowrl.{}.0",
                std::process::id()
            ));
            let file = File::options()
                .write(true)
                .create_new(true)
                .open(&path)
                .with_context(|| format!("cannot create the event file {}", path.display()))?;
            Self::on_file(dir.clone(), file, path)
        });
        opened.map_err(|e| {
            unregister(&dir);
            e.context(format!("cannot start logging into {}", dir.display()))
        })
    }

    /// A logger of the folder `dir` writing into the open `file` at `path`; writes
    /// the file-version event that opens every event file.
    fn on_file(dir: PathBuf, file: File, path: PathBuf) -> anyhow::Result<Self> {
        let mut logger = Self {
            dir,
            file: Some((file, path)),
            written: 0,
        };
        let wall_time = now()?.as_secs_f64();
        logger.write_event(&events::file_version_event(wall_time))?;
        Ok(logger)
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
    /// are kept) under `tag` at `step`. After a failed write (e.g. a full disk) the
    /// logger stays failed: every later call returns an error too.
    pub fn scalar(&mut self, tag: &str, step: u64, value: f64) -> anyhow::Result<()> {
        if tag.trim().is_empty() {
            bail!("a TensorBoard scalar needs a non-empty tag (step {step})");
        }
        let wall_time = now()?.as_secs_f64();
        self.write_event(&events::scalar_event(wall_time, step, tag, value as f32))
            .with_context(|| format!("cannot log `{tag}` at step {step}"))?;
        self.written += 1;
        Ok(())
    }

    /// Records that the run continues at `step` (after a resume): a running
    /// TensorBoard then discards the points it holds at `step` and later, which the
    /// run logs again. [`read_scalars`] skips the record.
    pub fn session_start(&mut self, step: u64) -> anyhow::Result<()> {
        let wall_time = now()?.as_secs_f64();
        self.write_event(&events::session_start_event(wall_time, step))
    }

    /// Logs several scalars at one step.
    pub fn scalars(&mut self, step: u64, values: &[(&str, f64)]) -> anyhow::Result<()> {
        values
            .iter()
            .try_for_each(|(tag, value)| self.scalar(tag, step, *value))
    }

    /// Writes one framed event; on failure the logger is closed for good and a partly
    /// written record is cut off.
    fn write_event(&mut self, event: &[u8]) -> anyhow::Result<()> {
        let Some((file, path)) = self.file.as_mut() else {
            bail!(
                "the TensorBoard log of {} stopped after an earlier write error",
                self.dir.display()
            );
        };
        let start = file.stream_position();
        if let Err(e) = file.write_all(&events::frame(event)) {
            // Cut a partly written record (best effort): the file stays readable.
            if let Ok(start) = start {
                let _ = file.set_len(start);
            }
            let path = path.display().to_string();
            self.file = None;
            return Err(anyhow!(e).context(format!("cannot write the event file {path}")));
        }
        Ok(())
    }

    /// Closes the writer, syncing the event file: when this returns `Ok`, every
    /// scalar is on disk.
    pub fn close(mut self) -> anyhow::Result<()> {
        let result = match self.file.take() {
            Some((file, path)) => file
                .sync_all()
                .with_context(|| format!("cannot sync the event file {}", path.display())),
            None => Ok(()),
        };
        unregister(&self.dir);
        result
    }
}

impl Drop for RunLogger {
    fn drop(&mut self) {
        // Records are already written; `close` also syncs and reports errors.
        unregister(&self.dir);
    }
}

fn unregister(dir: &Path) {
    if let Ok(mut open) = open_dirs().lock() {
        open.remove(dir);
    }
}

/// Returns the current second once no event file in `dir` carries it in its name.
fn wait_for_fresh_second(dir: &Path) -> anyhow::Result<u64> {
    loop {
        let now = now()?;
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
            return Ok(now.as_secs());
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

    #[cfg(target_os = "linux")]
    #[test]
    fn a_full_disk_is_an_error_naming_the_file_not_a_panic() {
        let run = tempfile::tempdir().unwrap();
        let full = PathBuf::from("/dev/full");
        let file = File::options().write(true).open(&full).unwrap();
        let err = RunLogger::on_file(run.path().to_path_buf(), file, full.clone())
            .err()
            .unwrap();
        let text = format!("{err:#}");
        assert!(
            text.contains("/dev/full") && text.contains("No space left"),
            "{text}"
        );

        let file = File::options().write(true).open(&full).unwrap();
        let mut log = RunLogger {
            dir: run.path().to_path_buf(),
            file: Some((file, full)),
            written: 0,
        };
        let err = format!("{:#}", log.scalar("train/loss", 3, 1.0).unwrap_err());
        assert!(
            err.contains("`train/loss` at step 3") && err.contains("No space left"),
            "{err}"
        );
        let err = format!("{:#}", log.scalar("train/loss", 4, 1.0).unwrap_err());
        assert!(
            err.contains("stopped after an earlier write error"),
            "{err}"
        );
        assert_eq!(log.written(), 0);
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
