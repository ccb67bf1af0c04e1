//! Throughput of the whole recording path against plain write + fsync of the same bytes.
//!
//! Run: `cargo build --release --bins && cargo bench -p nvr-e2e` (`NVR_BENCH_SECS`, default 5,
//! sets how long the pipeline runs).
//!
//! 1. Pipeline: `nvr-syncer` and one `nvr-ingest` on a `synthetic:` source at full speed
//!    (`speed=max`, 30 fps of media at 4 Mbit/s, a key frame a second, 2 s rotation): frames go
//!    ingest -> write(2) on a descriptor handed over by SCM_RIGHTS -> progress -> close ->
//!    syncer fstat, fsync, dir fsync, blake3 -> SQLite commit.
//! 2. Baseline, in the same run on the same file system: the committed recordings' samples,
//!    same sizes and count, written with plain `write` per sample and `fsync` + directory
//!    `fsync` per recording (the cadence the syncer syncs at), with nothing else.
//!
//! Reports both rates, their ratio, and the syncer's CPU time per 1000 samples.

use std::io::Write;
use std::time::{Duration, Instant};

use e2e::*;
use nix::sys::signal::Signal;
use protocol::sample_index::SampleIndexIterator;
use syncer::db::Database;

fn main() {
    let secs: u64 = std::env::var("NVR_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let (_tmp, d) = data_dir(&[("bench", camera("synthetic:", 1, 2))]);
    let mut syncer = start_syncer(&d);
    let source = "synthetic:?fps=30&bitrate=4000000&gop=30&speed=max";
    let started = Instant::now();
    let mut ingest = start_ingest(&d, "bench", source, &[]);
    eprintln!("pipeline: running {secs} s ...");
    std::thread::sleep(Duration::from_secs(secs));
    let syncer_cpu = syncer.cpu_time();
    ingest.signal(Signal::SIGTERM);
    assert!(
        ingest.wait(Duration::from_secs(30)).success(),
        "ingest failed"
    );
    let elapsed = started.elapsed();
    syncer.signal(Signal::SIGTERM);
    assert!(
        syncer.wait(Duration::from_secs(30)).success(),
        "syncer failed"
    );

    let db = Database::open(&d.db_path()).expect("db");
    let rows = db.recordings(None).expect("recordings");
    let mut sizes: Vec<Vec<usize>> = Vec::new();
    for r in &rows {
        let index = db.video_index(r.id).expect("index").expect("present");
        sizes.push(
            SampleIndexIterator::new(&index)
                .map(|s| s.expect("index decodes").bytes as usize)
                .collect(),
        );
    }
    let samples: usize = sizes.iter().map(Vec::len).sum();
    let bytes: usize = sizes.iter().flatten().sum();
    assert!(samples > 0, "nothing was committed");

    // Baseline on the same file system.
    let base_dir = d.root.join("baseline");
    std::fs::create_dir(&base_dir).expect("baseline dir");
    let dir = std::fs::File::open(&base_dir).expect("open dir");
    let payload = vec![0x5au8; sizes.iter().flatten().copied().max().unwrap_or(1)];
    let t = Instant::now();
    for (i, rec) in sizes.iter().enumerate() {
        let mut f = std::fs::File::create(base_dir.join(format!("{i:016x}"))).expect("create");
        for &n in rec {
            f.write_all(&payload[..n]).expect("write");
        }
        f.sync_all().expect("fsync");
        dir.sync_all().expect("dir fsync");
    }
    let baseline = t.elapsed();

    let mib = bytes as f64 / (1 << 20) as f64;
    let pipeline_rate = mib / elapsed.as_secs_f64();
    let baseline_rate = mib / baseline.as_secs_f64();
    let cpu_per_1000 = syncer_cpu.as_secs_f64() * 1000.0 / samples as f64;
    println!("recordings committed        {}", rows.len());
    println!("samples / bytes             {samples} / {mib:.1} MiB");
    println!(
        "pipeline                    {pipeline_rate:.1} MiB/s ({:.2} s)",
        elapsed.as_secs_f64()
    );
    println!(
        "baseline write+fsync        {baseline_rate:.1} MiB/s ({:.2} s)",
        baseline.as_secs_f64()
    );
    println!(
        "pipeline / baseline         {:.2}",
        pipeline_rate / baseline_rate
    );
    println!(
        "syncer CPU per 1000 samples {:.1} ms",
        cpu_per_1000 * 1000.0
    );
}
