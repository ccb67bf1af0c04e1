//! Tests of source URL parsing.

use super::*;

#[test]
fn urls_parse_with_defaults_and_parameters() {
    assert_eq!(
        SourceUrl::parse("file:/a/b.h264").unwrap(),
        SourceUrl {
            spec: SourceSpec::File {
                path: "/a/b.h264".into(),
                fps: DEFAULT_FPS
            },
            speed: Speed::RealTime,
        }
    );
    assert_eq!(
        SourceUrl::parse("file:rel.h264?speed=max&fps=25").unwrap(),
        SourceUrl {
            spec: SourceSpec::File {
                path: "rel.h264".into(),
                fps: 25.0
            },
            speed: Speed::Max,
        }
    );
    assert_eq!(
        SourceUrl::parse("synthetic:").unwrap(),
        SourceUrl {
            spec: SourceSpec::Synthetic(SyntheticParams {
                fps: DEFAULT_FPS,
                bitrate: DEFAULT_BITRATE,
                gop: DEFAULT_GOP,
            }),
            speed: Speed::RealTime,
        }
    );
    assert_eq!(
        SourceUrl::parse("synthetic:?fps=10&bitrate=500000&gop=20&speed=2.5").unwrap(),
        SourceUrl {
            spec: SourceSpec::Synthetic(SyntheticParams {
                fps: 10.0,
                bitrate: 500_000,
                gop: 20,
            }),
            speed: Speed::Times(2.5),
        }
    );
    assert_eq!(
        SourceUrl::parse("synthetic:?speed=1").unwrap().speed,
        Speed::RealTime
    );
}

#[test]
fn bad_urls_are_refused_with_the_reason() {
    for (url, reason) in [
        ("", "expected file:PATH or synthetic:"),
        ("rtsp://camera/stream", "unsupported scheme \"rtsp\""),
        ("file:", "file: needs a path"),
        ("file:?speed=max", "file: needs a path"),
        ("file:a?speed=0", "speed=\"0\" is neither"),
        ("file:a?speed=-2", "speed=\"-2\" is neither"),
        ("file:a?speed=fast", "speed=\"fast\" is neither"),
        ("file:a?speed=inf", "speed=\"inf\" is neither"),
        ("file:a?fps=0", "fps=0 is outside"),
        ("file:a?fps=5000", "fps=5000 is outside"),
        ("file:a?fps=x", "fps=\"x\" is not a valid number"),
        ("file:a?bogus=1", "unknown parameter \"bogus\""),
        ("file:a?speed=2&speed=3", "parameter \"speed\" given twice"),
        ("file:a?speed", "parameter \"speed\" is not key=value"),
        ("synthetic:cam", "synthetic: takes no path"),
        ("synthetic:?gop=0", "bitrate and gop must be positive"),
        ("synthetic:?bitrate=0", "bitrate and gop must be positive"),
        ("synthetic:?gop=-1", "gop=\"-1\" is not a valid number"),
        ("synthetic:?fps=1&bitrate=1000000000", "over the limit of"),
    ] {
        let err = SourceUrl::parse(url).unwrap_err();
        assert_eq!(err.url, url);
        assert!(err.reason.contains(reason), "{url}: {}", err.reason);
    }
}
