//! `nvr-hostile-ingest`: a compromised ingest, for the tests. Installed as `nvr-ingest` in a
//! test's bin dir, it is what `nvr run` starts for every camera: a camera named
//! `evil-ATTACK` gets ATTACK performed on the syncer connection on fd 3 with what an ingest
//! holds (the connection, the descriptors it is handed, syscalls); any other camera gets the
//! real `nvr-ingest` (the path in `NVR_REAL_INGEST`), exec'd with the same arguments.
//!
//! Attacks marked *sandboxed* run after the ingest's own sandbox is entered, as a compromised
//! ingest would: the sandbox must kill them. The others need only allowed syscalls, so the
//! syncer must stop them whatever the sandbox does.
//!
//! - `keep-fd` (*sandboxed*): writes 8 MiB through a committed recording's descriptor, then
//!   closes it.
//! - `fallocate-unsandboxed`: preallocates 16 MiB (`FALLOC_FL_KEEP_SIZE`) on a committed
//!   recording, keeping its descriptor.
//! - `fallocate`, `ftruncate`, `clear-append` (*sandboxed*): preallocates 64 MiB on its
//!   growing file, truncates it, clears its descriptor's `O_APPEND` (`fcntl(F_SETFL)`).
//! - `open-flood` (*sandboxed*): opens and closes tiny recordings as fast as it is let.
//! - `poison-entry` (*sandboxed*): registers the shipped clip's exact `avc1` box (the honest
//!   camera's) as 1x1 with codec `avc1.000000`, and records with it.
//! - `absurd-times` (*sandboxed*): closes a recording starting near `i64::MAX` ticks.
//!
//! After its attack it stays alive, holding its descriptors, until it is killed.

use std::io::Write;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;

use protocol::messages::{
    Hello, HelloReply, IngestReply, IngestRequest, ROLE_INGEST, RecordingTimes, SampleReport,
};
use protocol::{CompositeId, Conn, Time};

/// Frames per second of the recordings it makes.
const FPS_90K: i64 = 3000;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let camera = args
        .iter()
        .position(|a| a == "--camera")
        .and_then(|i| args.get(i + 1))
        .expect("--camera NAME");
    let Some(attack) = camera.strip_prefix("evil-") else {
        let real = std::env::var_os("NVR_REAL_INGEST").expect("NVR_REAL_INGEST");
        let e = std::process::Command::new(real).args(&args[1..]).exec();
        panic!("cannot exec the real nvr-ingest: {e}");
    };
    eprintln!("hostile ingest {camera}: attack {attack}");
    // SAFETY: fd 3 is the syncer connection the supervisor passed; nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(protocol::wire::INGEST_CONNECTION_FD) };
    let mut h = Hostile::connect(Conn::from(UnixStream::from(fd)));
    match attack {
        "keep-fd" => {
            sandbox();
            h.keep_fd()
        }
        "fallocate-unsandboxed" => {
            let (id, f) = h.record();
            preallocate(id, &f, 16 << 20);
            std::mem::forget(f); // Kept open: the syncer must see the blocks.
        }
        "fallocate" => {
            sandbox();
            let (id, f) = h.open_with_samples();
            preallocate(id, &f, 64 << 20);
        }
        "ftruncate" => {
            sandbox();
            let (_, f) = h.open_with_samples();
            nix::unistd::ftruncate(&f, 1).expect("ftruncate");
        }
        "clear-append" => {
            sandbox();
            let (_, f) = h.open_with_samples();
            let flags = nix::fcntl::OFlag::O_WRONLY;
            nix::fcntl::fcntl(&f, nix::fcntl::FcntlArg::F_SETFL(flags)).expect("F_SETFL");
        }
        "open-flood" => {
            sandbox();
            h.open_flood()
        }
        "poison-entry" => {
            let clip = std::fs::read(e2e::clip_path()).expect("the shipped clip");
            sandbox();
            h.poison_entry(&clip)
        }
        "absurd-times" => {
            sandbox();
            h.absurd_times()
        }
        other => panic!("unknown attack {other:?}"),
    }
    eprintln!("hostile ingest {camera}: attack done");
    loop {
        h.expect(|_| false);
    }
}

/// Says `why` and stays alive, holding every descriptor, until killed.
fn linger(why: &str) -> ! {
    eprintln!("hostile ingest: {why}; lingering until killed");
    loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

/// Preallocates `bytes` on `id`'s file past its end (`FALLOC_FL_KEEP_SIZE`).
fn preallocate(id: CompositeId, f: &std::fs::File, bytes: i64) {
    eprintln!("hostile ingest: preallocating {bytes} bytes on {id}");
    let keep_size = nix::fcntl::FallocateFlags::FALLOC_FL_KEEP_SIZE;
    nix::fcntl::fallocate(f, keep_size, 0, bytes).expect("fallocate");
}

/// Enters the real ingest's sandbox, as a compromised ingest runs in it.
fn sandbox() {
    let report = ingest::sandbox::enter(&ingest::sandbox::Policy::new(None)).expect("sandbox");
    eprintln!("hostile ingest: sandboxed: {report}");
}

struct Hostile {
    conn: Conn,
    entry: i32,
    start: Time,
}

impl Hostile {
    fn connect(mut conn: Conn) -> Hostile {
        conn.send(&Hello::new(ROLE_INGEST)).expect("hello");
        let _: HelloReply = conn.recv().expect("hello reply");
        let mut h = Hostile {
            conn,
            entry: 0,
            start: Time::from_system(std::time::SystemTime::now()),
        };
        h.entry = h.add_entry(16, 16, "avc1.4d400d", b"avc1 hostile entry".to_vec());
        h
    }

    fn add_entry(&mut self, width: u16, height: u16, codec: &str, data: Vec<u8>) -> i32 {
        let req = IngestRequest::AddSampleEntry {
            width,
            height,
            rfc6381_codec: codec.into(),
            data,
        };
        self.conn.send(&req).expect("add sample entry");
        match self.expect(|r| matches!(r, IngestReply::SampleEntry { .. })) {
            IngestReply::SampleEntry { id } => id,
            _ => unreachable!(),
        }
    }

    /// Reads answers until one matches `pred`. Refused, or with the connection gone, it
    /// lingers as an attacker would, keeping its descriptors, until it is killed.
    fn expect(&mut self, pred: impl Fn(&IngestReply) -> bool) -> IngestReply {
        loop {
            match self.conn.recv::<IngestReply>() {
                Ok(r) if pred(&r) => return r,
                Ok(IngestReply::Error { message }) => linger(&format!("refused: {message}")),
                Ok(_) => {}
                Err(e) => linger(&format!("connection lost: {e}")),
            }
        }
    }

    /// Opens a new run's recording; `None` when the open is refused (the budget).
    fn open(&mut self) -> Option<(CompositeId, std::fs::File)> {
        let req = IngestRequest::OpenRecording {
            run_offset: 0,
            sample_entry_id: self.entry,
        };
        self.conn.send(&req).expect("open");
        loop {
            match self.conn.recv_with_optional_fd::<IngestReply>() {
                Ok((IngestReply::Opened { id }, Some(fd))) => return Some((id, fd.into())),
                Ok((IngestReply::OpenRefused { .. }, None)) => return None,
                Ok((IngestReply::Error { message }, _)) => linger(&format!("refused: {message}")),
                Ok(_) => {}
                Err(e) => linger(&format!("connection lost: {e}")),
            }
        }
    }

    /// Writes and reports `n` samples of 1000 bytes; returns the bytes.
    fn write_samples(&mut self, id: CompositeId, f: &mut std::fs::File, n: u32) -> Vec<u8> {
        let data = vec![0x5a; n as usize * 1000];
        f.write_all(&data).expect("write");
        let samples = (0..n)
            .map(|i| SampleReport {
                pts_90k: i64::from(i) * FPS_90K,
                bytes: 1000,
                is_key: i == 0,
            })
            .collect();
        let req = IngestRequest::Progress {
            id,
            samples,
            times: self.times(i64::from(n - 1) * FPS_90K),
            written_bytes: data.len() as u64,
        };
        self.conn.send(&req).expect("progress");
        self.expect(|r| matches!(r, IngestReply::Progressed { .. }));
        data
    }

    fn times(&self, media_90k: i64) -> RecordingTimes {
        RecordingTimes {
            start: self.start,
            wall_duration_90k: media_90k as i32,
            local_time_delta_90k: 0,
        }
    }

    fn close(&mut self, id: CompositeId, data: &[u8], times: RecordingTimes) {
        let req = IngestRequest::CloseRecording {
            id,
            samples: vec![],
            last_sample_duration_90k: Some(FPS_90K as i32),
            times,
            end_reason: Some("hostile".into()),
            writer_blake3: *blake3::hash(data).as_bytes(),
        };
        self.conn.send(&req).expect("close");
    }

    /// Records one recording of 2 s and waits for its commit; returns its descriptor.
    fn record(&mut self) -> (CompositeId, std::fs::File) {
        let (id, mut f) = loop {
            if let Some(o) = self.open() {
                break o;
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        };
        let n = 60;
        let data = self.write_samples(id, &mut f, n);
        self.close(id, &data, self.times(i64::from(n) * FPS_90K));
        self.start += protocol::Duration(i64::from(n) * FPS_90K);
        self.expect(|r| matches!(r, IngestReply::Committed { ids } if ids.contains(&id)));
        (id, f)
    }

    fn open_with_samples(&mut self) -> (CompositeId, std::fs::File) {
        let (id, mut f) = self.open().expect("an open within the budget");
        self.write_samples(id, &mut f, 10);
        (id, f)
    }

    fn keep_fd(&mut self) {
        let (id, mut f) = self.record();
        eprintln!("hostile ingest: writing 8 MiB into committed recording {id}");
        f.write_all(&vec![0xee; 8 << 20])
            .expect("write through the kept descriptor");
    }

    fn open_flood(&mut self) {
        let (mut opened, mut refused) = (0u32, 0u32);
        for _ in 0..2000 {
            match self.open() {
                Some((id, mut f)) => {
                    opened += 1;
                    let data = self.write_samples(id, &mut f, 1);
                    self.close(id, &data, self.times(FPS_90K));
                    self.expect(|r| matches!(r, IngestReply::Accepted { .. }));
                    self.start += protocol::Duration(FPS_90K);
                }
                None => refused += 1,
            }
        }
        eprintln!("hostile ingest: open flood: {opened} opened, {refused} refused");
    }

    fn poison_entry(&mut self, clip: &[u8]) {
        let clip = ingest::h264::parse_clip(clip).expect("the shipped clip parses");
        let honest = clip.sample_entries[0].data.clone();
        self.entry = self.add_entry(1, 1, "avc1.000000", honest);
        let (id, _) = self.record();
        eprintln!(
            "hostile ingest: recorded {id} with the poisoned entry {}",
            self.entry
        );
    }

    fn absurd_times(&mut self) {
        let (id, mut f) = self.open().expect("an open within the budget");
        let data = self.write_samples(id, &mut f, 10);
        let times = RecordingTimes {
            start: Time(i64::MAX - 1000),
            ..self.times(10 * FPS_90K)
        };
        self.close(id, &data, times);
        self.expect(|r| matches!(r, IngestReply::Accepted { .. }));
    }
}
