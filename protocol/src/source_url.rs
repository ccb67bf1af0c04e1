//! Camera source URLs: the form of `rtsp://` URLs (checked by `nvr camera add` and the syncer
//! up front, and parsed the same way by the ingest), and the credentials inside them
//! (`rtsp://USER:PASSWORD@HOST/...`): how they are kept off command lines and out of listings.
//!
//! # Camera URLs
//!
//! `rtsp://[USER:PASSWORD@]HOST[:PORT]/PATH[?QUERY]`. Two query parameters are nvr's and are
//! taken out before the URL goes to the camera: `transport=tcp|udp` (default `tcp`: RTP
//! interleaved on the RTSP connection; `udp` for cameras on a LAN) and `stall_sec=N` (1 to
//! [`MAX_STALL_SEC`], default [`DEFAULT_STALL_SEC`]: a session without a frame for this long
//! has stalled). The rest of the query is the camera's.
//!
//! # Credentials
//!
//! A camera's password is stored with its source URL in the database (readable by the
//! syncer's user only). It must not leak further: the supervisor starts the ingest with the
//! URL stripped of its user info and passes the credentials in the environment (see
//! [`split_credentials`]); listings and logs show the URL with the password replaced by `***`
//! ([`redact`]).

use url::Url;

/// Stall timeout unless the URL's `stall_sec` says otherwise, in seconds.
pub const DEFAULT_STALL_SEC: u64 = 10;

/// Longest stall timeout a URL may ask for, in seconds.
pub const MAX_STALL_SEC: u64 = 300;

/// A camera URL that is not of the form [`RtspUrl::parse`] takes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("bad source URL {url:?}: {reason}")]
pub struct BadSourceUrl {
    /// The URL, its password replaced by `***`.
    pub url: String,
    /// What is wrong with it.
    pub reason: String,
}

/// The environment variable that carries a camera's user name to `nvr-ingest` (the
/// environment of a process is readable only by its user and root, and not even by its user
/// once the ingest has made itself non-dumpable).
pub const USERNAME_ENV: &str = "NVR_RTSP_USERNAME";

/// The environment variable that carries a camera's password to `nvr-ingest`.
pub const PASSWORD_ENV: &str = "NVR_RTSP_PASSWORD";

/// What a password is replaced with by [`redact`].
pub const REDACTED: &str = "***";

/// `source` with the password of its user info, if any, replaced by [`REDACTED`]. A text that
/// does not parse as a URL (a bad port, say: exactly what error messages show) is redacted by
/// its form: whatever stands between the first `:` and the last `@` of the part after `://`
/// and before the path.
pub fn redact(source: &str) -> String {
    if let Ok(mut url) = Url::parse(source) {
        if url.password().is_some() && url.set_password(Some(REDACTED)).is_ok() {
            return url.to_string();
        }
        return source.to_owned();
    }
    let Some((scheme, rest)) = source.split_once("://") else {
        return source.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((user_info, host)) if user_info.contains(':') => {
            let user = user_info.split_once(':').map_or(user_info, |(u, _)| u);
            format!("{scheme}://{user}:{REDACTED}@{host}{path}")
        }
        _ => source.to_owned(),
    }
}

/// User name and password, percent-decoded, taken out of a URL's user info.
#[derive(Clone, PartialEq, Eq)]
pub struct UrlCredentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for UrlCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UrlCredentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// Splits an `rtsp://` URL's user info from the rest: `(URL without user info, credentials)`.
/// A URL without user info, one that does not parse, or another scheme comes back unchanged
/// with `None`; so does user info that is not UTF-8 once percent-decoded (the ingest then
/// refuses the URL itself, with a clear error).
pub fn split_credentials(source: &str) -> (String, Option<UrlCredentials>) {
    let unchanged = || (source.to_owned(), None);
    let Ok(mut url) = Url::parse(source) else {
        return unchanged();
    };
    if url.scheme() != "rtsp" || (url.username().is_empty() && url.password().is_none()) {
        return unchanged();
    }
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8()
            .map(|s| s.into_owned())
    };
    let (Ok(username), Ok(password)) =
        (decode(url.username()), decode(url.password().unwrap_or("")))
    else {
        return unchanged();
    };
    if url.set_username("").is_err() || url.set_password(None).is_err() {
        return unchanged();
    }
    (url.to_string(), Some(UrlCredentials { username, password }))
}

/// How RTP packets travel (the URL's `transport`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// Interleaved on the RTSP TCP connection.
    Tcp,
    /// RTP and RTCP on UDP ports of their own.
    Udp,
}

/// A parsed `rtsp://` source URL (see the module docs, "Camera URLs").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RtspUrl {
    /// What is sent to the camera: no user info, none of our parameters.
    pub url: Url,
    /// From the URL's user info, if it had any.
    pub credentials: Option<UrlCredentials>,
    pub transport: Transport,
    /// A session with no frame for this long has stalled.
    pub stall_timeout: std::time::Duration,
}

impl RtspUrl {
    /// Parses `text` (see the module docs); every problem is a [`BadSourceUrl`] naming it.
    pub fn parse(text: &str) -> Result<Self, BadSourceUrl> {
        let bad = |reason: String| BadSourceUrl {
            url: redact(text),
            reason,
        };
        let mut url = Url::parse(text).map_err(|e| bad(e.to_string()))?;
        if url.scheme() != "rtsp" {
            return Err(bad(format!("scheme {:?} is not rtsp", url.scheme())));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(bad("no host".to_owned()));
        }
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .map(|s| s.into_owned())
                .map_err(|_| bad("user info is not UTF-8 once percent-decoded".to_owned()))
        };
        let credentials = if url.username().is_empty() && url.password().is_none() {
            None
        } else {
            Some(UrlCredentials {
                username: decode(url.username())?,
                password: decode(url.password().unwrap_or(""))?,
            })
        };
        // Setting user info cannot fail on a URL with a host (checked above).
        url.set_username("").expect("rtsp URL has a host");
        url.set_password(None).expect("rtsp URL has a host");

        // Our parameters come out; the camera's stay byte for byte, as given.
        let mut transport = None;
        let mut stall_sec = None;
        let mut kept: Vec<&str> = Vec::new();
        let query = url.query().unwrap_or("").to_owned();
        for segment in query.split('&').filter(|s| !s.is_empty()) {
            let (k, v) = segment.split_once('=').unwrap_or((segment, ""));
            let v = percent_encoding::percent_decode_str(v)
                .decode_utf8_lossy()
                .into_owned();
            let seen = match k {
                "transport" => transport.replace(v).is_some(),
                "stall_sec" => stall_sec.replace(v).is_some(),
                _ => {
                    kept.push(segment);
                    false
                }
            };
            if seen {
                return Err(bad(format!("parameter {k:?} given twice")));
            }
        }
        let transport = match transport.as_deref() {
            None | Some("tcp") => Transport::Tcp,
            Some("udp") => Transport::Udp,
            Some(other) => return Err(bad(format!("transport={other:?} is neither tcp nor udp"))),
        };
        let stall_sec = match stall_sec {
            None => DEFAULT_STALL_SEC,
            Some(v) => match v.parse::<u64>() {
                Ok(n) if (1..=MAX_STALL_SEC).contains(&n) => n,
                _ => return Err(bad(format!("stall_sec={v:?} is not 1..={MAX_STALL_SEC}"))),
            },
        };
        if kept.is_empty() {
            url.set_query(None);
        } else {
            url.set_query(Some(&kept.join("&")));
        }
        Ok(RtspUrl {
            url,
            credentials,
            transport,
            stall_timeout: std::time::Duration::from_secs(stall_sec),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_only_the_password() {
        assert_eq!(
            redact("rtsp://admin:hunter2@cam:554/x?y=1"),
            "rtsp://admin:***@cam:554/x?y=1"
        );
        assert_eq!(redact("rtsp://admin@cam/x"), "rtsp://admin@cam/x");
        assert_eq!(redact("rtsp://cam/x"), "rtsp://cam/x");
        assert_eq!(redact("file:/a/b.h264"), "file:/a/b.h264");
        assert_eq!(redact("not a url"), "not a url");
        // Texts that do not parse are redacted by their form.
        assert_eq!(
            redact("rtsp://u:secret@cam:99999/x"),
            "rtsp://u:***@cam:99999/x"
        );
        assert_eq!(
            redact("rtsp://u:se@cr:et@c am/x?a=b@c"),
            "rtsp://u:***@c am/x?a=b@c"
        );
        assert_eq!(redact("rtsp://c am/x"), "rtsp://c am/x");
    }

    #[test]
    fn the_cameras_query_is_passed_on_as_given() {
        let u = RtspUrl::parse("rtsp://cam/x?onvif&a=1,2/3:4&transport=udp&b=%41").unwrap();
        assert_eq!(u.url.as_str(), "rtsp://cam/x?onvif&a=1,2/3:4&b=%41");
        let u = RtspUrl::parse("rtsp://cam/x?stall_sec=%35").unwrap();
        assert_eq!(u.stall_timeout, std::time::Duration::from_secs(5));
        assert_eq!(u.url.as_str(), "rtsp://cam/x");
    }

    #[test]
    fn split_takes_out_percent_decoded_user_info() {
        let (url, c) = split_credentials("rtsp://ad%20min:p%40ss%3Aw@10.0.0.7:554/h264?a=1");
        assert_eq!(url, "rtsp://10.0.0.7:554/h264?a=1");
        let c = c.unwrap();
        assert_eq!(
            (c.username.as_str(), c.password.as_str()),
            ("ad min", "p@ss:w")
        );
        assert!(!format!("{c:?}").contains("p@ss"));

        let (url, c) = split_credentials("rtsp://user@cam/x");
        assert_eq!(url, "rtsp://cam/x");
        assert_eq!(c.unwrap().password, "");
    }

    #[test]
    fn split_leaves_everything_else_alone() {
        for s in [
            "rtsp://cam/x",
            "file:/a/b",
            "synthetic:?fps=5",
            "rtsp://u:%ff@cam/x",
            "::",
        ] {
            assert_eq!(split_credentials(s), (s.to_owned(), None), "{s}");
        }
    }

    #[test]
    fn our_parameters_and_user_info_are_taken_out_of_the_url() {
        let u = RtspUrl::parse(
            "rtsp://admin:p%40ss%3Aw@10.0.0.7:554/Streaming/101?transport=udp&channel=1&stall_sec=5",
        )
        .unwrap();
        assert_eq!(
            u.url.as_str(),
            "rtsp://10.0.0.7:554/Streaming/101?channel=1"
        );
        assert_eq!(
            u.credentials,
            Some(UrlCredentials {
                username: "admin".to_owned(),
                password: "p@ss:w".to_owned()
            })
        );
        assert_eq!(u.transport, Transport::Udp);
        assert_eq!(u.stall_timeout, std::time::Duration::from_secs(5));

        let u = RtspUrl::parse("rtsp://cam.local/stream1").unwrap();
        assert_eq!(u.url.as_str(), "rtsp://cam.local/stream1");
        assert_eq!(u.credentials, None);
        assert_eq!(u.transport, Transport::Tcp);
        assert_eq!(
            u.stall_timeout,
            std::time::Duration::from_secs(DEFAULT_STALL_SEC)
        );
    }

    #[test]
    fn bad_urls_are_refused_naming_the_problem_without_the_password() {
        for (url, why) in [
            ("rtsp://", "no host"),
            ("http://cam/x", "scheme"),
            ("rtsp://cam/x?transport=quic", "neither tcp nor udp"),
            ("rtsp://cam/x?transport=tcp&transport=udp", "twice"),
            ("rtsp://cam/x?stall_sec=0", "stall_sec"),
            ("rtsp://cam/x?stall_sec=301", "stall_sec"),
            ("rtsp://u:secret@cam/x?stall_sec=abc", "stall_sec"),
            ("rtsp://u:%ff@cam/x", "UTF-8"),
        ] {
            let e = RtspUrl::parse(url).unwrap_err().to_string();
            assert!(e.contains(why), "{url}: {e}");
            assert!(!e.contains("secret"), "{url}: {e}");
        }
    }
}
