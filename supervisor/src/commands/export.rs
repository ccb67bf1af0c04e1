//! `nvr export --camera NAME (--start TIME --end TIME | --id ID) -o FILE.mp4`: a camera's
//! committed recordings as one playable `.mp4` (see [`crate::mp4`] for the file layout).
//!
//! - **Selection**: the camera's committed recordings overlapping `[start, end)`, or the one
//!   recording `--id`, exported *whole* (not trimmed to the bounds: every exported sample file
//!   is copied as it is, and a cut would have to start at a key frame anyway), in id order.
//! - **Runs and gaps**: recordings of several runs go into one track with their samples back
//!   to back, so the timeline stays monotonic and plays through; the wall-clock gap between
//!   runs is closed up (the file's duration is the sum of the media durations). Within a run
//!   recordings abut exactly, so nothing is lost there.
//! - **Trailing zero**: a recording's last sample has duration 0 when the next pts was unknown
//!   (`FLAG_TRAILING_ZERO`). Players mishandle zero-length frames, so it gets the duration of
//!   the sample before it ([`FALLBACK_FRAME_DURATION_90K`] if there is none).
//! - **Sample entry**: an mp4 track here has one sample description, so every recording must
//!   use the same one; when the codec parameters changed in the range, the export fails naming
//!   the two recordings where they differ.
//! - **Concurrency**: the database is opened read-only without the data dir's lock, and the
//!   rows, indexes and sample entries are read in one snapshot; committed sample files are
//!   immutable until retention deletes them, so this is safe while `nvr run` records. A file
//!   deleted in the meantime fails the export with an error naming it.
//! - **Identity**: run as root on a data dir another user owns, the database and sample files
//!   are opened with that owner's file-system ids ([`FsIdentity`]); the output is the caller's.
//! - **Output**: written to `FILE.partial`, fsynced, then renamed over `FILE` (so a failed or
//!   interrupted export never leaves a truncated FILE). Memory stays bounded: the sample
//!   tables take a few bytes per frame and the media is copied in [`COPY_CHUNK_BYTES`] pieces.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use protocol::sample_index::{IndexError, SampleIndexIterator};
use protocol::{CompositeId, Duration, Time};
use syncer::db::{Database, DbError, FLAG_FILE_MISSING, RecordingRow, SampleEntry};
use syncer::fs::{Dir, OpenMode, RealDir};
use syncer::layout::{DataDir, sample_file_name};
use thiserror::Error;

use super::CmdResult;
use crate::cli::ExportArgs;
use crate::identity::{FsIdentity, Identity};
use crate::mp4::{self, Mp4Error, SampleTable, VideoTrack};
use crate::progress::ProgressLine;
use crate::size::Size;

/// Duration given to a trailing-zero sample that has no sample before it in the export (a
/// recording of one frame): 1/30 s.
pub const FALLBACK_FRAME_DURATION_90K: u32 = 3_000;

/// Bytes copied from a sample file per read.
const COPY_CHUNK_BYTES: usize = 1 << 20;

/// Exports at least this large print a progress line on stderr.
const PROGRESS_MIN_BYTES: u64 = 64 << 20;

#[derive(Debug, Error)]
pub enum ExportError {
    #[error("not an nvr data dir (no {db}); run `nvr init` first")]
    NotInitialized { db: PathBuf },
    #[error("database: {0}")]
    Db(#[from] DbError),
    #[error("no camera named {0:?}")]
    NoSuchCamera(String),
    #[error("the range is empty: --end {end} is not after --start {start}")]
    EmptyRange { start: Time, end: Time },
    #[error("camera {camera:?} has no committed recordings between {start} and {end}")]
    NothingInRange {
        camera: String,
        start: Time,
        end: Time,
    },
    #[error("{id} is not a committed recording of camera {camera:?}")]
    NoSuchRecording { camera: String, id: CompositeId },
    #[error("recording {id}: its sample file is missing (marked by `nvr check --repair`)")]
    FileMissing { id: CompositeId },
    #[error(
        "recordings {first} and {second} have different codec parameters (sample entries \
         {first_entry} and {second_entry}); export the ranges before and from {second} \
         separately"
    )]
    SampleEntryChanged {
        first: CompositeId,
        first_entry: i32,
        second: CompositeId,
        second_entry: i32,
    },
    #[error("recording {id}: its sample entry {entry} is not in the database")]
    NoSuchSampleEntry { id: CompositeId, entry: i32 },
    #[error("recording {id}: its sample index is not in the database")]
    NoIndex { id: CompositeId },
    #[error("recording {id}: sample index: {source}")]
    Index { id: CompositeId, source: IndexError },
    #[error(
        "recording {id}: the index holds {index_samples} samples of {index_bytes} bytes, but \
         its row says {row_samples} of {row_bytes}"
    )]
    IndexDisagreesWithRow {
        id: CompositeId,
        index_samples: u32,
        index_bytes: u64,
        row_samples: i32,
        row_bytes: i64,
    },
    #[error(
        "recording {id}: sample file {path} is gone (deleted by retention during the export?); \
         export a later range"
    )]
    FileGone { id: CompositeId, path: PathBuf },
    #[error("recording {id}: sample file {path} holds {actual} bytes, expected {expected}")]
    FileLength {
        id: CompositeId,
        path: PathBuf,
        actual: u64,
        expected: u64,
    },
    #[error("{0}")]
    Mp4(#[from] Mp4Error),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

fn io_error<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> ExportError + 'a {
    move |source| ExportError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

/// Which recordings of the camera to export.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Selection {
    /// Those overlapping `[start, end)`.
    Range { start: Time, end: Time },
    /// Exactly this one.
    One(CompositeId),
}

/// What to write: the recordings, their shared sample entry, and the sample tables.
#[derive(Debug)]
pub struct Plan {
    pub rows: Vec<RecordingRow>,
    pub entry: SampleEntry,
    pub table: SampleTable,
}

pub fn run(d: &DataDir, args: &ExportArgs) -> CmdResult {
    let selection = match (args.start, args.end, args.id) {
        (_, _, Some(id)) => Selection::One(id),
        (Some(start), Some(end), None) => Selection::Range { start, end },
        // clap requires --start with --end, and one of them or --id.
        _ => return Err("give --start and --end, or --id".into()),
    };
    // On a data dir given to a user, what is read is read as that user: root's access is not
    // lent to a link the user left there. The output is written as the caller.
    let reader = crate::identity::reader_for(d)?;
    let plan = read_plan(d, &args.camera, selection, reader)?;
    let written = write_mp4(d, &plan, &args.output, reader)?;
    let runs = 1 + plan
        .rows
        .windows(2)
        .filter(|w| w[1].run_offset != w[0].run_offset + 1)
        .count();
    let first = &plan.rows[0];
    let last = &plan.rows[plan.rows.len() - 1];
    println!(
        "exported {} recording(s) of {:?} ({}..{}, {} run(s), {} to {}): {} frames, {}, {} to {}",
        plan.rows.len(),
        args.camera,
        first.id,
        last.id,
        runs,
        first.start,
        last.start + Duration(i64::from(last.wall_duration_90k)),
        plan.table.samples(),
        Duration(plan.table.duration_90k() as i64),
        Size(written),
        args.output.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Reads what to export from the database, opened read-only, in one snapshot.
pub fn read_plan(
    d: &DataDir,
    camera: &str,
    selection: Selection,
    reader: Option<Identity>,
) -> Result<Plan, ExportError> {
    if let Selection::Range { start, end } = selection
        && end <= start
    {
        return Err(ExportError::EmptyRange { start, end });
    }
    let db_path = d.db_path();
    if !db_path.exists() {
        return Err(ExportError::NotInitialized { db: db_path });
    }
    let _as_reader = reader.map(FsIdentity::assume);
    let db = Database::open_read_only(&db_path)?;
    db.read_snapshot(|db| plan(db, camera, selection))
}

fn plan(db: &Database, camera: &str, selection: Selection) -> Result<Plan, ExportError> {
    let stream = db
        .streams()?
        .into_iter()
        .find(|s| s.name == camera)
        .ok_or_else(|| ExportError::NoSuchCamera(camera.to_owned()))?;
    let rows: Vec<RecordingRow> = db
        .recordings(Some(stream.id))?
        .into_iter()
        .filter(|r| match selection {
            Selection::One(id) => r.id == id,
            Selection::Range { start, end } => {
                r.start < end && r.start + Duration(i64::from(r.wall_duration_90k)) > start
            }
        })
        .collect();
    let Some(first) = rows.first() else {
        return Err(match selection {
            Selection::One(id) => ExportError::NoSuchRecording {
                camera: camera.to_owned(),
                id,
            },
            Selection::Range { start, end } => ExportError::NothingInRange {
                camera: camera.to_owned(),
                start,
                end,
            },
        });
    };
    let entries = db.sample_entries()?;
    let entry_of = |r: &RecordingRow| {
        entries
            .iter()
            .find(|e| e.id == r.video_sample_entry_id)
            .ok_or(ExportError::NoSuchSampleEntry {
                id: r.id,
                entry: r.video_sample_entry_id,
            })
    };
    let entry = entry_of(first)?.clone();
    let mut table = SampleTable::new();
    let mut last_duration_90k = None;
    let mut previous = first;
    for r in &rows {
        if r.flags & FLAG_FILE_MISSING != 0 {
            return Err(ExportError::FileMissing { id: r.id });
        }
        // Entries are stored once per distinct box, so a different id is a different box.
        if entry_of(r)?.data != entry.data {
            return Err(ExportError::SampleEntryChanged {
                first: previous.id,
                first_entry: previous.video_sample_entry_id,
                second: r.id,
                second_entry: r.video_sample_entry_id,
            });
        }
        let index = db
            .video_index(r.id)?
            .ok_or(ExportError::NoIndex { id: r.id })?;
        append_recording(&mut table, r, &index, &mut last_duration_90k)?;
        previous = r;
    }
    Ok(Plan { rows, entry, table })
}

/// Appends recording `r`'s samples, decoded from `index`, as one chunk. `last_duration_90k`
/// carries the duration of the last sample appended so far, for a trailing zero.
pub fn append_recording(
    table: &mut SampleTable,
    r: &RecordingRow,
    index: &[u8],
    last_duration_90k: &mut Option<u32>,
) -> Result<(), ExportError> {
    let samples_before = table.samples();
    let bytes_before = table.mdat_payload_bytes();
    table.start_chunk();
    for s in SampleIndexIterator::new(index) {
        let s = s.map_err(|source| ExportError::Index { id: r.id, source })?;
        // The decoder guarantees duration >= 0 and bytes > 0, and zero only on the last.
        let duration_90k = match s.duration_90k as u32 {
            0 => last_duration_90k.unwrap_or(FALLBACK_FRAME_DURATION_90K),
            d => d,
        };
        table.push(duration_90k, s.bytes as u32, s.is_key)?;
        *last_duration_90k = Some(duration_90k);
    }
    let index_samples = table.samples() - samples_before;
    let index_bytes = table.mdat_payload_bytes() - bytes_before;
    if i64::from(index_samples) != i64::from(r.video_samples)
        || i64::try_from(index_bytes).ok() != Some(r.sample_file_bytes)
    {
        return Err(ExportError::IndexDisagreesWithRow {
            id: r.id,
            index_samples,
            index_bytes,
            row_samples: r.video_samples,
            row_bytes: r.sample_file_bytes,
        });
    }
    Ok(())
}

/// `FILE.partial` beside `FILE`.
fn partial_path(output: &Path) -> PathBuf {
    let mut name = output.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

/// Writes the movie to `output` (through `output.partial`); returns its size in bytes.
pub fn write_mp4(
    d: &DataDir,
    plan: &Plan,
    output: &Path,
    reader: Option<Identity>,
) -> Result<u64, ExportError> {
    let header = mp4::header(
        &VideoTrack {
            width: plan.entry.width,
            height: plan.entry.height,
            sample_entry: &plan.entry.data,
            created: plan.rows[0].start,
        },
        &plan.table,
    )?;
    let partial = partial_path(output);
    let result = write_partial(d, plan, &header.bytes, &partial, reader);
    let written = match result {
        Ok(n) => n,
        Err(e) => {
            // Best effort: the error being reported matters more than a leftover partial.
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    std::fs::rename(&partial, output).map_err(io_error("rename to", output))?;
    let parent = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(parent)
        .and_then(|dir| dir.sync_all())
        .map_err(io_error("fsync", parent))?;
    Ok(written)
}

fn write_partial(
    d: &DataDir,
    plan: &Plan,
    header: &[u8],
    partial: &Path,
    reader: Option<Identity>,
) -> Result<u64, ExportError> {
    let sample_dir_path = d.sample_dir_path();
    let sample_dir = {
        let _as_reader = reader.map(FsIdentity::assume);
        RealDir::open_dir(&sample_dir_path).map_err(io_error("open", &sample_dir_path))?
    };
    let mut out = File::create(partial).map_err(io_error("create", partial))?;
    out.write_all(header).map_err(io_error("write", partial))?;
    let total_bytes = header.len() as u64 + plan.table.mdat_payload_bytes();
    let mut progress = ProgressLine::new("exporting", total_bytes >= PROGRESS_MIN_BYTES);
    let mut done_bytes = header.len() as u64;
    let mut buf = vec![0u8; COPY_CHUNK_BYTES];
    for r in &plan.rows {
        let name = sample_file_name(r.id);
        let path = sample_dir_path.join(&name);
        let as_reader = reader.map(FsIdentity::assume);
        let opened = sample_dir.open(&name, OpenMode::ReadOnly);
        drop(as_reader);
        let mut file = opened.map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => ExportError::FileGone {
                id: r.id,
                path: path.clone(),
            },
            _ => io_error("open", &path)(e),
        })?;
        let expected = r.sample_file_bytes as u64;
        let actual = file.metadata().map_err(io_error("stat", &path))?.len();
        let length_error = |actual| ExportError::FileLength {
            id: r.id,
            path: path.clone(),
            actual,
            expected,
        };
        if actual != expected {
            return Err(length_error(actual));
        }
        let mut copied = 0u64;
        while copied < expected {
            let want = (expected - copied).min(buf.len() as u64) as usize;
            let n = file
                .read(&mut buf[..want])
                .map_err(io_error("read", &path))?;
            if n == 0 {
                return Err(length_error(copied));
            }
            out.write_all(&buf[..n])
                .map_err(io_error("write", partial))?;
            copied += n as u64;
            done_bytes += n as u64;
            progress.update(done_bytes, total_bytes, "");
        }
    }
    progress.finish();
    out.sync_all().map_err(io_error("fsync", partial))?;
    Ok(done_bytes)
}

#[cfg(test)]
mod tests {
    use protocol::sample_index::SampleIndexEncoder;

    use super::*;

    fn row(id: i32, samples: &[(i32, i32, bool)]) -> (RecordingRow, Vec<u8>) {
        let mut enc = SampleIndexEncoder::new();
        let mut index = Vec::new();
        for &(d, b, k) in samples {
            enc.add_sample(d, b, k, &mut index);
        }
        let r = RecordingRow {
            id: CompositeId::new(1, id),
            open_id: 1,
            run_offset: 0,
            flags: 0,
            start: Time(0),
            wall_duration_90k: samples.iter().map(|s| s.0).sum(),
            media_duration_90k: samples.iter().map(|s| s.0).sum(),
            video_samples: samples.len() as i32,
            video_sync_samples: samples.iter().filter(|s| s.2).count() as i32,
            sample_file_bytes: samples.iter().map(|s| i64::from(s.1)).sum(),
            video_sample_entry_id: 1,
            local_time_delta_90k: 0,
            blake3: [0; 32],
            end_reason: None,
        };
        (r, index)
    }

    #[test]
    fn a_trailing_zero_takes_the_previous_samples_duration() {
        let mut t = SampleTable::new();
        let mut last = None;
        let (r, index) = row(1, &[(3000, 10, true), (2900, 5, false), (0, 6, false)]);
        append_recording(&mut t, &r, &index, &mut last).unwrap();
        assert_eq!(t.samples(), 3);
        assert_eq!(t.duration_90k(), 3000 + 2900 + 2900);
        assert_eq!(t.mdat_payload_bytes(), 21);
        // A one-frame recording with a trailing zero continues the previous recording's pace.
        let (r, index) = row(2, &[(0, 7, true)]);
        append_recording(&mut t, &r, &index, &mut last).unwrap();
        assert_eq!(t.duration_90k(), 8800 + 2900);
    }

    #[test]
    fn a_lone_trailing_zero_gets_the_fallback_duration() {
        let mut t = SampleTable::new();
        let (r, index) = row(1, &[(0, 7, true)]);
        append_recording(&mut t, &r, &index, &mut None).unwrap();
        assert_eq!(t.duration_90k(), u64::from(FALLBACK_FRAME_DURATION_90K));
    }

    #[test]
    fn an_index_that_disagrees_with_its_row_is_refused() {
        let (mut r, index) = row(1, &[(3000, 10, true), (3000, 5, false)]);
        r.sample_file_bytes = 16;
        let e = append_recording(&mut SampleTable::new(), &r, &index, &mut None).unwrap_err();
        assert!(
            matches!(
                e,
                ExportError::IndexDisagreesWithRow {
                    index_bytes: 15,
                    ..
                }
            ),
            "{e}"
        );
        let (r, mut index) = row(1, &[(3000, 10, true)]);
        index.push(0x80); // a varint cut short
        let e = append_recording(&mut SampleTable::new(), &r, &index, &mut None).unwrap_err();
        assert!(matches!(e, ExportError::Index { .. }), "{e}");
        assert!(e.to_string().contains("0000000100000001"), "{e}");
    }

    #[test]
    fn the_partial_file_sits_beside_the_output() {
        assert_eq!(
            partial_path(Path::new("out/clip.mp4")),
            Path::new("out/clip.mp4.partial")
        );
    }
}
