//! The credentials inside a camera's source URL (`rtsp://USER:PASSWORD@HOST/...`): how they
//! are kept off command lines and out of listings.
//!
//! A camera's password is stored with its source URL in the database (readable by the
//! syncer's user only). It must not leak further: the supervisor starts the ingest with the
//! URL stripped of its user info and passes the credentials in the environment (see
//! [`split_credentials`]); listings and logs show the URL with the password replaced by `***`
//! ([`redact`]).

use url::Url;

/// The environment variable that carries a camera's user name to `nvr-ingest` (the
/// environment of a process is readable only by its user and root, and not even by its user
/// once the ingest has made itself non-dumpable).
pub const USERNAME_ENV: &str = "NVR_RTSP_USERNAME";

/// The environment variable that carries a camera's password to `nvr-ingest`.
pub const PASSWORD_ENV: &str = "NVR_RTSP_PASSWORD";

/// What a password is replaced with by [`redact`].
pub const REDACTED: &str = "***";

/// `source` with the password of its user info, if any, replaced by [`REDACTED`]. Anything
/// that is not a URL with a password is returned as it is.
pub fn redact(source: &str) -> String {
    match Url::parse(source) {
        Ok(mut url) if url.password().is_some() => match url.set_password(Some(REDACTED)) {
            Ok(()) => url.to_string(),
            Err(()) => source.to_owned(),
        },
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
}
