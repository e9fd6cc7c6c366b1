//! A reader of TensorBoard event files: TFRecord framing with checked CRC32C sums,
//! and just enough protobuf to take the scalars out of `Event` messages.
//!
//! A record is: data length (u64 LE), masked CRC32C of those 8 bytes (u32 LE), the
//! data, masked CRC32C of the data (u32 LE). The data is an `Event`
//! {wall_time = 1 double, step = 2 int64, summary = 5 Summary}; a `Summary` holds
//! repeated `value = 1` {tag = 1 string, simple_value = 2 float}. Values of other
//! kinds (images, histograms, tensors) are skipped.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use super::EVENT_FILE_PREFIX;

/// One scalar read back from an event file.
#[derive(Clone, Debug, PartialEq)]
pub struct Scalar {
    /// The tag, e.g. `train/loss`.
    pub tag: String,
    /// The step it was logged at.
    pub step: u64,
    /// The value (NaN and infinities are kept).
    pub value: f32,
    /// Seconds since the Unix epoch when it was logged.
    pub wall_time: f64,
}

/// Every scalar in the event files (`events.out.tfevents.*`) directly inside `dir`,
/// files in name order (which is creation-time order), records in file order.
/// Fails if there is no event file, or if a file is truncated or corrupt.
pub fn read_scalars(dir: &Path) -> anyhow::Result<Vec<Scalar>> {
    let files = event_files(dir)?;
    if files.is_empty() {
        bail!(
            "no TensorBoard event files ({EVENT_FILE_PREFIX}*) in {}",
            dir.display()
        );
    }
    let mut out = Vec::new();
    for file in files {
        out.extend(read_event_file(&file)?);
    }
    Ok(out)
}

/// The event files directly inside `dir`, in name order.
fn event_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = Vec::new();
    for entry in std::fs::read_dir(dir)
        .with_context(|| format!("cannot list the log folder {}", dir.display()))?
    {
        let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
        if super::is_event_file(&entry.file_name().to_string_lossy()) {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}

/// Every scalar in one event file, in record order.
pub fn read_event_file(path: &Path) -> anyhow::Result<Vec<Scalar>> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read the event file {}", path.display()))?;
    parse_records(&bytes).with_context(|| format!("event file {}", path.display()))
}

fn parse_records(bytes: &[u8]) -> anyhow::Result<Vec<Scalar>> {
    let mut out = Vec::new();
    for_each_record(bytes, |_, data| decode_event(data, &mut out))?;
    Ok(out)
}

/// Calls `f(record, data)` for each checked TFRecord of `bytes`, where `record` is
/// the whole framed record and `data` its payload; errors name the record and byte.
fn for_each_record<'a>(
    bytes: &'a [u8],
    mut f: impl FnMut(&'a [u8], &'a [u8]) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut at = 0usize;
    let mut record = 0usize;
    while at < bytes.len() {
        let rest = &bytes[at..];
        if rest.len() < 12 {
            bail!(
                "record {record} at byte {at}: truncated header ({} of 12 bytes)",
                rest.len()
            );
        }
        let len_bytes = &rest[..8];
        let len = u64::from_le_bytes(le_array(len_bytes));
        let len_crc = u32::from_le_bytes(le_array(&rest[8..12]));
        if masked_crc32c(len_bytes) != len_crc {
            bail!("record {record} at byte {at}: length checksum mismatch (corrupt file)");
        }
        let need = usize::try_from(len)
            .ok()
            .and_then(|n| n.checked_add(16))
            .filter(|&n| n <= rest.len());
        let Some(need) = need else {
            bail!(
                "record {record} at byte {at}: truncated (needs {len} data bytes, {} left)",
                rest.len().saturating_sub(16)
            );
        };
        let data = &rest[12..need - 4];
        let data_crc = u32::from_le_bytes(le_array(&rest[need - 4..need]));
        if masked_crc32c(data) != data_crc {
            bail!("record {record} at byte {at}: data checksum mismatch (corrupt file)");
        }
        f(&rest[..need], data)
            .with_context(|| format!("record {record} at byte {at}: bad Event message"))?;
        at += need;
        record += 1;
    }
    Ok(())
}

/// Removes, from every event file directly inside `dir`, the events of steps after
/// `step` (a resumed run logs those steps again), rewriting only files that change
/// (atomically). Events without a step (the file version) are kept. Returns the
/// number of events removed; a missing folder removes nothing.
pub fn drop_steps_after(dir: &Path, step: u64) -> anyhow::Result<usize> {
    if !dir.is_dir() {
        return Ok(0);
    }
    let mut removed = 0;
    for file in event_files(dir)? {
        let bytes = std::fs::read(&file)
            .with_context(|| format!("cannot read the event file {}", file.display()))?;
        let mut kept = Vec::with_capacity(bytes.len());
        let mut dropped = 0;
        for_each_record(&bytes, |record, data| {
            if event_step(data)? > step {
                dropped += 1;
            } else {
                kept.extend_from_slice(record);
            }
            Ok(())
        })
        .with_context(|| format!("event file {}", file.display()))?;
        if dropped > 0 {
            crate::atomic::write_bytes_atomic(&file, &kept)?;
            removed += dropped;
        }
    }
    Ok(removed)
}

/// The step of an `Event` message (0 when absent; negative steps count as 0).
fn event_step(data: &[u8]) -> anyhow::Result<u64> {
    let mut step = 0;
    let mut msg = Proto::new(data);
    while let Some((field, wire)) = msg.key()? {
        match (field, wire) {
            (2, WIRE_VARINT) => step = msg.varint()?,
            _ => msg.skip(wire)?,
        }
    }
    Ok(u64::try_from(step as i64).unwrap_or(0))
}

/// `data` framed as a TFRecord: length, its masked CRC32C, data, its masked CRC32C.
pub(super) fn frame(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend(len);
    out.extend(masked_crc32c(&len).to_le_bytes());
    out.extend(data);
    out.extend(masked_crc32c(data).to_le_bytes());
    out
}

/// The `Event` {wall_time, file_version = "brain.Event:2"} that opens an event file.
pub(super) fn file_version_event(wall_time: f64) -> Vec<u8> {
    let mut event = vec![0x09];
    event.extend(wall_time.to_le_bytes());
    put_bytes(&mut event, 3, b"brain.Event:2");
    event
}

/// The `Event` {wall_time, step, session_log {status = START}}: TensorBoard discards
/// the points it has loaded at `step` and later.
pub(super) fn session_start_event(wall_time: f64, step: u64) -> Vec<u8> {
    let mut event = vec![0x09];
    event.extend(wall_time.to_le_bytes());
    event.push(2 << 3 | WIRE_VARINT);
    put_varint(&mut event, step);
    put_bytes(&mut event, 6, &[1 << 3 | WIRE_VARINT, 1]);
    event
}

/// The `Event` {wall_time, step, summary {value {tag, simple_value}}} of one scalar.
pub(super) fn scalar_event(wall_time: f64, step: u64, tag: &str, value: f32) -> Vec<u8> {
    let mut v = Vec::new();
    put_bytes(&mut v, 1, tag.as_bytes());
    v.push(2 << 3 | WIRE_32);
    v.extend(value.to_le_bytes());
    let mut summary = Vec::new();
    put_bytes(&mut summary, 1, &v);
    let mut event = vec![0x09];
    event.extend(wall_time.to_le_bytes());
    event.push(2 << 3 | WIRE_VARINT);
    put_varint(&mut event, step);
    put_bytes(&mut event, 5, &summary);
    event
}

/// Appends field `field` (length-delimited) holding `bytes`.
fn put_bytes(out: &mut Vec<u8>, field: u8, bytes: &[u8]) {
    out.push(field << 3 | WIRE_LEN);
    put_varint(out, bytes.len() as u64);
    out.extend(bytes);
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    loop {
        let b = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

/// The first four or eight bytes of `b` as an array (callers pass exact slices).
fn le_array<const N: usize>(b: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&b[..N]);
    a
}

/// Appends the scalars of one `Event` message to `out`.
fn decode_event(data: &[u8], out: &mut Vec<Scalar>) -> anyhow::Result<()> {
    let mut wall_time = 0.0;
    let mut step = 0i64;
    let mut summaries = Vec::new();
    let mut msg = Proto::new(data);
    while let Some((field, wire)) = msg.key()? {
        match (field, wire) {
            (1, WIRE_64) => wall_time = f64::from_le_bytes(msg.fixed::<8>()?),
            (2, WIRE_VARINT) => step = msg.varint()? as i64,
            (5, WIRE_LEN) => summaries.push(msg.bytes()?),
            _ => msg.skip(wire)?,
        }
    }
    if summaries.is_empty() {
        return Ok(());
    }
    let step = u64::try_from(step).with_context(|| format!("negative step {step}"))?;
    for summary in summaries {
        let mut s = Proto::new(summary);
        while let Some((field, wire)) = s.key()? {
            if (field, wire) == (1, WIRE_LEN) {
                if let Some((tag, value)) = decode_value(s.bytes()?)? {
                    out.push(Scalar {
                        tag,
                        step,
                        value,
                        wall_time,
                    });
                }
            } else {
                s.skip(wire)?;
            }
        }
    }
    Ok(())
}

/// The tag and simple value of a `Summary.Value`, `None` if it is not a simple scalar.
fn decode_value(data: &[u8]) -> anyhow::Result<Option<(String, f32)>> {
    let mut tag = String::new();
    let mut value = None;
    let mut v = Proto::new(data);
    while let Some((field, wire)) = v.key()? {
        match (field, wire) {
            (1, WIRE_LEN) => {
                tag =
                    String::from_utf8(v.bytes()?.to_vec()).context("a summary tag is not UTF-8")?;
            }
            (2, WIRE_32) => value = Some(f32::from_le_bytes(v.fixed::<4>()?)),
            _ => v.skip(wire)?,
        }
    }
    Ok(value.map(|value| (tag, value)))
}

const WIRE_VARINT: u8 = 0;
const WIRE_64: u8 = 1;
const WIRE_LEN: u8 = 2;
const WIRE_32: u8 = 5;

/// A cursor over one protobuf message.
struct Proto<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Proto<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf, at: 0 }
    }

    /// The next field number and wire type, `None` at the end of the message.
    fn key(&mut self) -> anyhow::Result<Option<(u64, u8)>> {
        if self.at >= self.buf.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        Ok(Some((key >> 3, (key & 7) as u8)))
    }

    fn varint(&mut self) -> anyhow::Result<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let Some(&b) = self.buf.get(self.at) else {
                bail!("truncated varint at byte {}", self.at);
            };
            self.at += 1;
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        bail!("varint longer than 10 bytes at byte {}", self.at)
    }

    fn take(&mut self, n: usize) -> anyhow::Result<&'a [u8]> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .with_context(|| {
                format!(
                    "field of {n} bytes at byte {} runs past the end ({} bytes)",
                    self.at,
                    self.buf.len()
                )
            })?;
        let out = &self.buf[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn fixed<const N: usize>(&mut self) -> anyhow::Result<[u8; N]> {
        Ok(le_array(self.take(N)?))
    }

    fn bytes(&mut self) -> anyhow::Result<&'a [u8]> {
        let len = self.varint()?;
        let len = usize::try_from(len).context("length does not fit in memory")?;
        self.take(len)
    }

    fn skip(&mut self, wire: u8) -> anyhow::Result<()> {
        match wire {
            WIRE_VARINT => self.varint().map(drop),
            WIRE_64 => self.take(8).map(drop),
            WIRE_LEN => self.bytes().map(drop),
            WIRE_32 => self.take(4).map(drop),
            other => bail!("unsupported protobuf wire type {other} at byte {}", self.at),
        }
    }
}

/// CRC32C (Castagnoli) lookup table, reflected polynomial 0x82F63B78.
const CRC32C_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc = CRC32C_TABLE[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

/// The masked CRC32C that TFRecord files store: rotate right by 15, add 0xa282ead8.
pub fn masked_crc32c(data: &[u8]) -> u32 {
    crc32c(data).rotate_right(15).wrapping_add(0xa282_ead8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scalar_event(tag: &str, step: u64, value: f32) -> Vec<u8> {
        super::scalar_event(1.7e9, step, tag, value)
    }

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
    }

    #[test]
    fn hand_made_records_decode() {
        let mut bytes = frame(&scalar_event("a/b", 300, 2.5));
        bytes.extend(frame(&scalar_event("c", 0, -0.0)));
        let got = parse_records(&bytes).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(
            (got[0].tag.as_str(), got[0].step, got[0].value),
            ("a/b", 300, 2.5)
        );
        assert_eq!(got[0].wall_time, 1.7e9);
        assert_eq!(got[1].value.to_bits(), (-0.0f32).to_bits());
    }

    #[test]
    fn corrupt_and_truncated_files_are_reported() {
        let good = frame(&scalar_event("loss", 7, 1.0));
        let mut flipped = good.clone();
        flipped[20] ^= 0x01;
        let err = parse_records(&flipped).unwrap_err().to_string();
        assert!(err.contains("data checksum mismatch"), "{err}");

        let mut bad_len = good.clone();
        bad_len[0] ^= 0x40;
        let err = parse_records(&bad_len).unwrap_err().to_string();
        assert!(err.contains("length checksum mismatch"), "{err}");

        let mut two = good.clone();
        two.extend(&good[..good.len() - 3]);
        let err = parse_records(&two).unwrap_err().to_string();
        assert!(
            err.contains("record 1") && err.contains("truncated"),
            "{err}"
        );

        let err = parse_records(&good[..5]).unwrap_err().to_string();
        assert!(err.contains("truncated header"), "{err}");
    }

    #[test]
    fn corrupt_file_error_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.out.tfevents.0000000001.host.1.0");
        let mut bytes = frame(&scalar_event("loss", 7, 1.0));
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
        let err = format!("{:#}", read_scalars(dir.path()).unwrap_err());
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains("checksum mismatch"), "{err}");
    }

    #[test]
    fn dropping_later_steps_keeps_earlier_ones_the_file_version_and_session_starts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.out.tfevents.0000000001.host.1.0");
        let mut bytes = frame(&file_version_event(1.7e9));
        bytes.extend(frame(&session_start_event(1.7e9, 1)));
        for step in [1, 2, 3, 4] {
            bytes.extend(frame(&scalar_event("loss", step, step as f32)));
        }
        std::fs::write(&path, bytes).unwrap();
        assert_eq!(drop_steps_after(dir.path(), 2).unwrap(), 2);
        let steps: Vec<u64> = read_scalars(dir.path())
            .unwrap()
            .iter()
            .map(|s| s.step)
            .collect();
        assert_eq!(steps, [1, 2]);
        let version = frame(&file_version_event(1.7e9));
        assert!(std::fs::read(&path).unwrap().starts_with(&version));
        assert_eq!(drop_steps_after(dir.path(), 2).unwrap(), 0);
    }

    #[test]
    fn folder_without_event_files_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("other.txt"), b"x").unwrap();
        let err = read_scalars(dir.path()).unwrap_err().to_string();
        assert!(err.contains("no TensorBoard event files"), "{err}");
    }
}
