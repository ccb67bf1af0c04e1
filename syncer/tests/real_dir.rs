//! The syncer on a real directory and a real SQLite file: the production seam end to end.

use std::sync::Arc;

use protocol::Time;
use protocol::clock::{Clock, RealClock};
use protocol::messages::{RecordingTimes, SampleReport};
use syncer::db::{Database, StreamConfig};
use syncer::fs::{DirFile, write_all};
use syncer::layout::{DataDir, sample_file_name};
use syncer::{CloseRequest, Syncer, SyncerOptions};

fn start(d: &DataDir) -> Syncer<syncer::fs::RealDir> {
    let dir = d.lock_sample_dir().unwrap();
    let db = Database::open(&d.db_path()).unwrap();
    let clock: Arc<dyn Clock> = Arc::new(RealClock);
    Syncer::start(Arc::new(dir), db, clock, SyncerOptions::default())
        .unwrap()
        .0
}

/// Adds stream "cam" and a sample entry; returns their ids.
fn add_camera(s: &mut Syncer<syncer::fs::RealDir>) -> (i32, i32) {
    let stream = s
        .add_stream(
            "cam",
            StreamConfig {
                source: "synthetic:".into(),
                retain_bytes: 1 << 30,
                flush_if_sec: 0,
                rotate_sec: 60,
            },
        )
        .unwrap();
    let entry = s
        .add_sample_entry(stream, &[], 640, 480, "avc1.4d401e", b"entry")
        .unwrap();
    (stream, entry)
}

/// Closes `id` as one key sample of `data` (which the writer wrote), 1/30 s long.
fn close_one_sample(s: &mut Syncer<syncer::fs::RealDir>, id: protocol::CompositeId, data: &[u8]) {
    let req = CloseRequest {
        samples: vec![SampleReport {
            pts_90k: 0,
            bytes: data.len() as u32,
            is_key: true,
        }],
        last_sample_duration_90k: Some(3000),
        times: RecordingTimes {
            start: Time::from_system(std::time::SystemTime::now()),
            wall_duration_90k: 3000,
            local_time_delta_90k: 0,
        },
        end_reason: None,
        writer_blake3: *blake3::hash(data).as_bytes(),
    };
    s.close_recording(id, req).unwrap();
}

#[test]
fn records_on_a_real_directory_and_holds_the_lock() {
    let tmp = tempfile::tempdir().unwrap();
    let d = DataDir::new(tmp.path().join("data"));
    d.init().unwrap();
    let mut s = start(&d);

    // A second syncer on the same data dir is refused while the first runs.
    let e = d.lock_sample_dir().unwrap_err();
    assert!(e.to_string().contains("holds this data dir"), "{e}");

    let (stream, entry) = add_camera(&mut s);
    let (id, mut w) = s.open_recording(stream, 0, entry).unwrap();
    let frames: Vec<Vec<u8>> = (0..3u8).map(|i| vec![i; 1000]).collect();
    let mut hasher = blake3::Hasher::new();
    for f in &frames {
        write_all(&mut w, f).unwrap();
        hasher.update(f);
    }
    // The writer's descriptor is write-only and separate from the syncer's.
    let mut buf = [0u8; 1];
    assert!(w.read_at(&mut buf, 0).is_err());
    let start_t = Time::from_system(std::time::SystemTime::now());
    s.close_recording(
        id,
        CloseRequest {
            samples: (0..3)
                .map(|i| SampleReport {
                    pts_90k: i * 3000,
                    bytes: 1000,
                    is_key: i == 0,
                })
                .collect(),
            last_sample_duration_90k: Some(3000),
            times: RecordingTimes {
                start: start_t,
                wall_duration_90k: 9000,
                local_time_delta_90k: 0,
            },
            end_reason: None,
            writer_blake3: *hasher.finalize().as_bytes(),
        },
    )
    .unwrap();
    let committed = s.shutdown().unwrap();
    assert_eq!(committed[0].ids, vec![id]);
    drop(s);

    let on_disk = std::fs::read(d.sample_dir_path().join(sample_file_name(id))).unwrap();
    assert_eq!(on_disk.len(), 3000);
    let s = start(&d);
    let rows = s.db().recordings(None).unwrap();
    assert_eq!(rows[0].blake3, *blake3::hash(&on_disk).as_bytes());
    assert_eq!((rows[0].start, rows[0].wall_duration_90k), (start_t, 9000));
}

/// The writer's descriptor is `O_APPEND`: a hostile ingest's `pwrite` over bytes it already
/// reported lands at the end instead, so the reported prefix (and the hash the syncer will
/// compute of it) cannot change through that descriptor.
#[test]
fn the_writer_descriptor_cannot_overwrite_written_bytes() {
    use std::os::unix::fs::FileExt;
    let tmp = tempfile::tempdir().unwrap();
    let d = DataDir::new(tmp.path().join("data"));
    d.init().unwrap();
    let mut s = start(&d);
    let (stream, entry) = add_camera(&mut s);
    let (id, mut w) = s.open_recording(stream, 0, entry).unwrap();
    write_all(&mut w, &[7u8; 1000]).unwrap();
    let flags = nix::fcntl::fcntl(&w, nix::fcntl::FcntlArg::F_GETFL).unwrap();
    let flags = nix::fcntl::OFlag::from_bits_truncate(flags);
    assert!(flags.contains(nix::fcntl::OFlag::O_APPEND), "{flags:?}");
    assert!(flags.contains(nix::fcntl::OFlag::O_WRONLY), "{flags:?}");

    FileExt::write_all_at(&w, b"overwrite", 0).unwrap();
    let on_disk = std::fs::read(d.sample_dir_path().join(sample_file_name(id))).unwrap();
    assert_eq!(&on_disk[..1000], &[7u8; 1000][..]);
    assert_eq!(&on_disk[1000..], b"overwrite");
}

/// A writer's `fallocate(FALLOC_FL_KEEP_SIZE)` through its own descriptor (4 MiB past a
/// 1000-byte recording) is released when the recording is closed: on this real file system
/// the committed file occupies no more than its data's block.
#[test]
fn a_writers_preallocation_is_released_at_close() {
    use std::os::unix::fs::MetadataExt;
    let tmp = tempfile::tempdir().unwrap();
    let d = DataDir::new(tmp.path().join("data"));
    d.init().unwrap();
    let mut s = start(&d);
    let (stream, entry) = add_camera(&mut s);
    let (id, mut w) = s.open_recording(stream, 0, entry).unwrap();
    let data = [7u8; 1000];
    write_all(&mut w, &data).unwrap();
    let keep_size = nix::fcntl::FallocateFlags::FALLOC_FL_KEEP_SIZE;
    nix::fcntl::fallocate(&w, keep_size, 0, 4 << 20).unwrap();
    let path = d.sample_dir_path().join(sample_file_name(id));
    assert!(std::fs::metadata(&path).unwrap().blocks() * 512 >= 4 << 20);
    close_one_sample(&mut s, id, &data);
    assert_eq!(s.shutdown().unwrap()[0].ids, vec![id]);
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.len(), 1000);
    assert!(
        meta.blocks() * 512 <= 64 << 10,
        "{} bytes allocated",
        meta.blocks() * 512
    );
}

/// Garbage is emptied before it is unlinked: a committed recording whose writer descriptor
/// an ingest kept frees its blocks when the recording is deleted, instead of holding them for
/// as long as the descriptor lives.
#[test]
fn deleted_recordings_free_their_blocks_even_while_a_descriptor_is_kept() {
    use std::os::unix::fs::MetadataExt;
    let tmp = tempfile::tempdir().unwrap();
    let d = DataDir::new(tmp.path().join("data"));
    d.init().unwrap();
    let mut s = start(&d);
    let (stream, entry) = add_camera(&mut s);
    let (id, mut kept) = s.open_recording(stream, 0, entry).unwrap();
    let data = vec![5u8; 100_000];
    write_all(&mut kept, &data).unwrap();
    close_one_sample(&mut s, id, &data);
    s.flush("test").unwrap();
    s.remove_stream(stream, true).unwrap();
    assert!(!d.sample_dir_path().join(sample_file_name(id)).exists());
    let held = kept.metadata().unwrap();
    assert_eq!(
        (held.len(), held.blocks()),
        (0, 0),
        "the kept descriptor holds nothing"
    );
}
