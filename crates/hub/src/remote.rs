//! What the hub says about one file: `HEAD {endpoint}/{repo}/resolve/{rev}/{file}`.
//!
//! For LFS files the hub answers with a redirect to its CDN and puts the file's sha256 in
//! `X-Linked-Etag` and its size in `X-Linked-Size`; small (non-LFS) files answer 200 with a git
//! blob id as `ETag`, which is not a sha256, so those are verified by size only.

use crate::config::HubConfig;
use crate::error::HubError;
use crate::spec::ModelSpec;

/// Facts about a remote file, from its `HEAD` answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteFile {
    /// The resolve URL that was asked.
    pub url: String,
    /// Where the bytes are (the redirect target for LFS files, else `url`).
    pub location: String,
    /// Size in bytes, when announced.
    pub size: Option<u64>,
    /// Lower-case hex sha256 of the content, when the hub gives one (LFS files).
    pub sha256: Option<String>,
    /// Commit the revision resolved to (`X-Repo-Commit`).
    pub commit: Option<String>,
}

/// Strips `W/` and quotes from an ETag; returns it lower-cased.
fn clean_etag(v: &str) -> String {
    v.trim().trim_start_matches("W/").trim_matches('"').to_ascii_lowercase()
}

/// A 64-hex-digit ETag is an LFS sha256.
fn as_sha256(etag: &str) -> Option<String> {
    (etag.len() == 64 && etag.bytes().all(|b| b.is_ascii_hexdigit())).then(|| etag.to_string())
}

/// Joins a `Location` header to the URL it answered (absolute, root-relative or relative).
pub(crate) fn join_location(base: &str, loc: &str) -> String {
    if loc.starts_with("http://") || loc.starts_with("https://") {
        return loc.to_string();
    }
    let (scheme, rest) = base.split_once("://").unwrap_or(("http", base));
    let host = rest.split('/').next().unwrap_or(rest);
    if loc.starts_with('/') {
        format!("{scheme}://{host}{loc}")
    } else {
        let dir = base.rsplit_once('/').map(|(d, _)| d).unwrap_or(base);
        format!("{dir}/{loc}")
    }
}

/// `scheme://host:port` of a URL, to tell whether a redirect leaves the hub.
pub(crate) fn origin(url: &str) -> &str {
    match url.find("://") {
        Some(i) => {
            let after = &url[i + 3..];
            let end = after.find('/').map(|j| i + 3 + j).unwrap_or(url.len());
            &url[..end]
        }
        None => url,
    }
}

/// Maps a transport error to [`HubError::Offline`] (the hub could not be reached).
pub(crate) fn transport(cfg: &HubConfig, e: ureq::Error) -> HubError {
    HubError::Offline { endpoint: cfg.endpoint.clone(), message: e.to_string() }
}

/// Maps a non-success status to the matching error.
pub(crate) fn status_error(url: &str, status: u16) -> HubError {
    match status {
        401 | 403 => HubError::Unauthorized { url: url.to_string(), status },
        404 => HubError::NotFound { url: url.to_string() },
        _ => HubError::Http { url: url.to_string(), status },
    }
}

fn header(resp: &ureq::http::Response<ureq::Body>, name: &str) -> Option<String> {
    resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
}

/// Asks the hub for a file's size and sha256 without downloading it.
///
/// Relative redirects (renamed repositories) are followed; an absolute redirect (the CDN) ends
/// the walk and becomes [`RemoteFile::location`].
pub fn head(cfg: &HubConfig, spec: &ModelSpec) -> Result<RemoteFile, HubError> {
    if cfg.offline {
        return Err(HubError::OfflineMode { file: spec.to_string() });
    }
    let agent = cfg.agent();
    let url = cfg.resolve_url(spec);
    let mut current = url.clone();
    for _ in 0..10 {
        let mut req = agent.head(&current);
        if let Some(t) = &cfg.token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        let resp = req.call().map_err(|e| transport(cfg, e))?;
        let status = resp.status().as_u16();
        let linked_etag = header(&resp, "x-linked-etag");
        let etag = linked_etag.clone().or_else(|| header(&resp, "etag")).map(|e| clean_etag(&e));
        let size = header(&resp, "x-linked-size")
            .or_else(|| header(&resp, "content-length"))
            .and_then(|s| s.trim().parse::<u64>().ok());
        let commit = header(&resp, "x-repo-commit");
        let location = header(&resp, "location");
        let done = |location: String| RemoteFile {
            url: url.clone(),
            location,
            size,
            sha256: etag.as_deref().and_then(as_sha256),
            commit: commit.clone(),
        };
        match status {
            200..=299 => return Ok(done(current.clone())),
            300..=399 => {
                let Some(loc) = location else { return Err(status_error(&current, status)) };
                let relative = !(loc.starts_with("http://") || loc.starts_with("https://"));
                let next = join_location(&current, &loc);
                // An LFS redirect carries the linked etag: the bytes live at `next`.
                if linked_etag.is_some() || !relative {
                    return Ok(done(next));
                }
                current = next;
            }
            _ => return Err(status_error(&current, status)),
        }
    }
    Err(HubError::Http { url, status: 310 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_and_locations() {
        let sha = "A".repeat(64);
        assert_eq!(as_sha256(&clean_etag(&format!("W/\"{sha}\""))), Some("a".repeat(64)));
        assert_eq!(as_sha256(&clean_etag("\"1a2b\"")), None);
        assert_eq!(join_location("http://h:1/a/b/c", "/x/y"), "http://h:1/x/y");
        assert_eq!(join_location("http://h:1/a/b/c", "d"), "http://h:1/a/b/d");
        assert_eq!(join_location("http://h:1/a", "https://cdn/x"), "https://cdn/x");
        assert_eq!(origin("https://cdn.example:8/x/y"), "https://cdn.example:8");
        assert_eq!(origin("http://h"), "http://h");
    }
}
