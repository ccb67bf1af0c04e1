//! The RTSP test rig works on its own, read by ffprobe rather than our client: GStreamer's
//! server (`tests/rtsp/serve.py`) streams the 4 s clip in an endless loop with increasing
//! timestamps over TCP and UDP, comes back on the same port after a restart, and enforces
//! credentials when given some.
//!
//! Without the GStreamer packages (see `.ci/run`) or ffmpeg the tests print `SKIPPED: ...` and
//! pass.

use std::net::TcpStream;

use e2e::rtsp::{RtspServer, clip_mp4, ffprobe_video_pts, skip_without_rtsp_server};

/// The shipped clip's length, in seconds (120 frames at 30 fps).
const CLIP_SECONDS: f64 = 4.0;

/// Checks `pts` (seconds) is `seconds` of the looped 30 fps clip: about 30 packets a second,
/// strictly increasing presentation times, reaching past the clip's end.
fn assert_looped_stream(pts: &[f64], seconds: u32, what: &str, server: &RtspServer) {
    let min_packets = (f64::from(seconds) * 30.0 * 0.8) as usize;
    assert!(
        pts.len() >= min_packets,
        "{what}: {} packets in {seconds} s, expected at least {min_packets}; server stderr:\n{}",
        pts.len(),
        server.stderr()
    );
    if let Some(w) = pts.windows(2).find(|w| w[1] <= w[0]) {
        panic!(
            "{what}: presentation time went from {} s to {} s",
            w[0], w[1]
        );
    }
    let last = pts[pts.len() - 1];
    assert!(
        last > CLIP_SECONDS + 1.0,
        "{what}: last presentation time {last} s is not past the {CLIP_SECONDS} s clip"
    );
}

#[test]
fn loops_over_tcp_and_udp_and_restarts_on_the_same_port() {
    if skip_without_rtsp_server("loops_over_tcp_and_udp_and_restarts_on_the_same_port") {
        return;
    }
    let tmp = tempfile::tempdir().expect("temp dir");
    let mp4 = clip_mp4(tmp.path());
    let mut server = RtspServer::start(&mp4, None, None);
    let url = server.url();

    // Both transports at once (each client gets its own pipeline), 9 s each: more than two
    // passes of the clip.
    let (tcp, udp) = std::thread::scope(|s| {
        let tcp = s.spawn(|| ffprobe_video_pts(&url, "tcp", 9));
        let udp = s.spawn(|| ffprobe_video_pts(&url, "udp", 9));
        (
            tcp.join().expect("tcp probe"),
            udp.join().expect("udp probe"),
        )
    });
    for (transport, pts) in [("tcp", tcp), ("udp", udp)] {
        let pts = pts.unwrap_or_else(|e| panic!("{e}\nserver stderr:\n{}", server.stderr()));
        assert_looped_stream(&pts, 9, &format!("{url} over {transport}"), &server);
        eprintln!(
            "{transport}: {} packets, last pts {:.3} s",
            pts.len(),
            pts[pts.len() - 1]
        );
    }

    let port = server.port();
    server.stop();
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "port {port} still accepts connections after the server stopped"
    );
    server.restart();
    assert_eq!(
        server.port(),
        port,
        "restart moved the server to another port"
    );
    assert_eq!(server.url(), url);
    let pts = ffprobe_video_pts(&url, "tcp", 6)
        .unwrap_or_else(|e| panic!("after restart: {e}\nserver stderr:\n{}", server.stderr()));
    assert_looped_stream(&pts, 6, &format!("{url} over tcp after restart"), &server);
    server.stop();
}

#[test]
fn credentials_are_required_when_set() {
    if skip_without_rtsp_server("credentials_are_required_when_set") {
        return;
    }
    let tmp = tempfile::tempdir().expect("temp dir");
    let mp4 = clip_mp4(tmp.path());
    let server = RtspServer::start(&mp4, None, Some(("alice", "s3cret")));
    let with = |user: &str, password: &str| {
        format!("rtsp://{user}:{password}@127.0.0.1:{}/clip", server.port())
    };

    for (what, url) in [
        ("no credentials", server.url()),
        ("a wrong password", with("alice", "wrong")),
    ] {
        match ffprobe_video_pts(&url, "tcp", 2) {
            Err(e) => assert!(e.contains("401"), "{what}: not a 401: {e}"),
            Ok(pts) => panic!("{what}: read {} packets from {url}", pts.len()),
        }
    }
    let pts = ffprobe_video_pts(&with("alice", "s3cret"), "tcp", 2).unwrap_or_else(|e| {
        panic!(
            "right credentials: {e}\nserver stderr:\n{}",
            server.stderr()
        )
    });
    assert!(
        pts.len() >= 40,
        "right credentials: only {} packets in 2 s",
        pts.len()
    );
}
