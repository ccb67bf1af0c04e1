use super::*;

#[test]
fn backoff_doubles_up_to_its_cap() {
    let mut d = None;
    let mut seen = Vec::new();
    for _ in 0..8 {
        let next = next_backoff(d);
        seen.push(next.as_secs());
        d = Some(next);
    }
    assert_eq!(seen, [1, 2, 4, 8, 16, 30, 30, 30]);
}

#[test]
fn long_reasons_are_cut_on_a_character_boundary() {
    let r = reason("camera-error", &"é".repeat(300));
    assert!(r.len() <= MAX_END_REASON_BYTES && r.starts_with("camera-error: é"));
    assert_eq!(
        reason("camera-error", &"first\n\nsecond\n"),
        "camera-error: first; second"
    );
}

#[test]
fn a_host_is_resolved_once_and_an_address_is_its_own() {
    let camera = |url: &str| {
        let url = RtspUrl::parse(url).unwrap();
        Camera::new(url, None, Arc::new(protocol::RealClock), Arc::default()).unwrap()
    };
    let by_ip = camera("rtsp://[::1]/x");
    assert_eq!(by_ip.addresses(), ["::1".parse::<IpAddr>().unwrap()]);
    assert_eq!(by_ip.port(), DEFAULT_PORT);
    // localhost comes from /etc/hosts: no query leaves the machine.
    let by_name = camera("rtsp://localhost:8554/x");
    assert!(
        !by_name.addresses().is_empty() && by_name.addresses().iter().all(|a| a.is_loopback()),
        "{:?}",
        by_name.addresses()
    );
    assert_eq!(by_name.port(), 8554);
}

/// A camera at `rtsp://127.0.0.1:PORT/x` whose stop flag is set after `after`.
fn camera_stopped_after(port: u16, after: std::time::Duration) -> Camera {
    let stop = Arc::new(AtomicBool::new(false));
    let url = RtspUrl::parse(&format!("rtsp://127.0.0.1:{port}/x")).unwrap();
    let flag = stop.clone();
    std::thread::spawn(move || {
        std::thread::sleep(after);
        flag.store(true, Ordering::SeqCst);
    });
    Camera::new(url, None, Arc::new(protocol::RealClock), stop).unwrap()
}

/// A camera nobody answers: connecting fails (refused), the camera backs off, and the stop
/// flag ends `next_event` promptly even during the backoff.
#[test]
fn a_refused_connect_backs_off_and_stops_promptly() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener); // nothing listens: connects are refused
    let mut cam = camera_stopped_after(port, std::time::Duration::from_millis(1500));
    let t0 = Instant::now();
    assert!(cam.next_event().is_none());
    let took = t0.elapsed();
    assert!(cam.failures >= 2, "failures {}", cam.failures);
    assert!(took < std::time::Duration::from_secs(3), "took {took:?}");
}

/// A "camera" that answers DESCRIBE with garbage: every connect fails with a clear error,
/// the camera keeps retrying with backoff, and nothing panics.
#[test]
fn a_camera_answering_garbage_is_retried_not_fatal() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            count.fetch_add(1, Ordering::SeqCst);
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            let _ = conn.write_all(b"RTSP/1.0 200 OK\r\nCSeq: banana\r\n\r\n\x00\xff garbage");
        }
    });
    let mut cam = camera_stopped_after(port, std::time::Duration::from_millis(1500));
    assert!(cam.next_event().is_none());
    assert!(cam.failures >= 2, "failures {}", cam.failures);
    assert!(accepted.load(Ordering::SeqCst) >= 2);
    assert!(cam.session.is_none());
}

/// A "camera" that accepts the connection and never answers: each connect step times out
/// (here after 300 ms instead of 10 s), so the camera neither hangs nor fails for good.
#[test]
fn a_camera_that_never_answers_times_out_and_is_retried() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            held.push(conn); // kept open, never answered
        }
    });
    // Connects at 0 s and 1.3 s (after the 1 s backoff) each time out after 0.3 s; the stop
    // at 2.5 s ends the 2 s backoff that follows.
    let mut cam = camera_stopped_after(port, std::time::Duration::from_millis(2500));
    cam.connect_timeout = std::time::Duration::from_millis(300);
    let t0 = Instant::now();
    assert!(cam.next_event().is_none());
    assert!(cam.failures >= 2, "failures {}", cam.failures);
    assert!(cam.session.is_none());
    assert!(
        t0.elapsed() < std::time::Duration::from_secs(4),
        "{:?}",
        t0.elapsed()
    );
}

/// A stop while a camera takes its time to answer is honoured at once, not after the
/// connect timeout.
#[test]
fn a_stop_while_connecting_is_honoured_promptly() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            held.push(conn);
        }
    });
    let mut cam = camera_stopped_after(port, std::time::Duration::from_millis(300));
    let t0 = Instant::now();
    assert!(cam.next_event().is_none());
    assert_eq!(cam.failures, 0, "a stop is not a failed connect");
    assert!(
        t0.elapsed() < std::time::Duration::from_secs(1),
        "{:?}",
        t0.elapsed()
    );
}
