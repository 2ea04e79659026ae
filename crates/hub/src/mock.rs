//! A tiny mock of the Hugging Face `resolve` endpoints (std only), for tests and for trying
//! `download-models` without network (`HF_ENDPOINT=http://127.0.0.1:PORT`).
//!
//! LFS files answer `HEAD` with a 302 to `/cdn/<name>` plus `X-Linked-Etag`/`X-Linked-Size`,
//! and the CDN honours `Range`. A file can be set to cut the connection half-way through its
//! next N transfers, or to advertise a wrong sha256.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex, MutexGuard};

use sha2::{Digest, Sha256};

/// One file the mock serves.
#[derive(Clone)]
pub struct MockFile {
    pub data: Vec<u8>,
    /// Served through the LFS redirect with a sha256 ETag (else a git-style ETag, no redirect).
    pub lfs: bool,
    /// The sha256 the hub claims (defaults to the real one).
    pub claimed_sha256: String,
    /// How many upcoming transfers stop half-way.
    pub interrupts: u32,
    /// Answer 401 unless this bearer token is sent.
    pub token: Option<String>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl MockFile {
    /// An LFS file with its true sha256.
    pub fn lfs(data: Vec<u8>) -> Self {
        let sha = hex::encode(Sha256::digest(&data));
        MockFile { data, lfs: true, claimed_sha256: sha, interrupts: 0, token: None }
    }
}

/// A request the mock saw.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub range: Option<String>,
    pub authorization: Option<String>,
}

/// The running mock; `endpoint` is its base URL.
pub struct MockHub {
    pub endpoint: String,
    pub files: Arc<Mutex<HashMap<String, MockFile>>>,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl MockHub {
    /// Serves `files`, keyed by `repo/file` (e.g. `org/model/x.safetensors`), on a free
    /// loopback port, from a background thread that lives as long as the process.
    pub fn start(files: Vec<(&str, MockFile)>) -> std::io::Result<MockHub> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let files: Arc<Mutex<HashMap<String, MockFile>>> =
            Arc::new(Mutex::new(files.into_iter().map(|(k, v)| (k.to_string(), v)).collect()));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (f2, s2) = (files.clone(), seen.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let (f3, s3) = (f2.clone(), s2.clone());
                std::thread::spawn(move || handle(conn, &f3, &s3));
            }
        });
        Ok(MockHub { endpoint, files, seen })
    }

    /// Every request seen so far, in order.
    pub fn requests(&self) -> Vec<Seen> {
        lock(&self.seen).clone()
    }
}

fn handle(mut conn: TcpStream, files: &Mutex<HashMap<String, MockFile>>, seen: &Mutex<Vec<Seen>>) {
    let Ok(read_half) = conn.try_clone() else { return };
    let mut reader = BufReader::new(read_half);
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let range = headers.get("range").cloned();
    let auth = headers.get("authorization").cloned();
    lock(seen).push(Seen { method: method.clone(), path: path.clone(), range: range.clone(), authorization: auth.clone() });

    let reply = |conn: &mut TcpStream, status: &str, hdrs: &[(String, String)], body: &[u8], declared: Option<usize>| {
        let mut head = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
        for (k, v) in hdrs {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str(&format!("Content-Length: {}\r\n\r\n", declared.unwrap_or(body.len())));
        let _ = conn.write_all(head.as_bytes());
        if method != "HEAD" {
            let _ = conn.write_all(body);
        }
        let _ = conn.flush();
    };

    let (key, cdn) = if let Some(name) = path.strip_prefix("/cdn/") {
        (name.to_string(), true)
    } else if let Some((repo, rest)) = path.trim_start_matches('/').split_once("/resolve/main/") {
        (format!("{repo}/{rest}"), false)
    } else {
        return reply(&mut conn, "404 Not Found", &[], b"", None);
    };
    let mut map = lock(files);
    let Some(file) = map.get_mut(&key) else {
        drop(map);
        return reply(&mut conn, "404 Not Found", &[("X-Error-Code".into(), "EntryNotFound".into())], b"", None);
    };
    if !cdn {
        if let Some(t) = &file.token {
            if auth.as_deref() != Some(&format!("Bearer {t}")) {
                drop(map);
                return reply(&mut conn, "401 Unauthorized", &[], b"", None);
            }
        }
    }
    let size = file.data.len();
    if !cdn && file.lfs {
        let hdrs = vec![
            ("Location".to_string(), format!("/cdn/{key}")),
            ("X-Linked-Etag".to_string(), format!("\"{}\"", file.claimed_sha256)),
            ("X-Linked-Size".to_string(), size.to_string()),
            ("X-Repo-Commit".to_string(), "0123456789abcdef0123456789abcdef01234567".to_string()),
            ("ETag".to_string(), "\"deadbeef\"".to_string()),
        ];
        drop(map);
        return reply(&mut conn, "302 Found", &hdrs, b"", None);
    }
    // The bytes (CDN, or a small non-LFS file served directly).
    let start = range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.split('-').next())
        .and_then(|s| s.parse::<usize>().ok());
    let interrupt = method == "GET" && file.interrupts > 0;
    if interrupt {
        file.interrupts -= 1;
    }
    let data = file.data.clone();
    let etag = if file.lfs { format!("\"{}\"", file.claimed_sha256) } else { "\"0a1b2c3d4e5f60718293a4b5c6d7e8f901234567\"".into() };
    drop(map);
    let (status, body, mut hdrs) = match start {
        Some(s) if s < size => (
            "206 Partial Content",
            data[s..].to_vec(),
            vec![("Content-Range".to_string(), format!("bytes {s}-{}/{size}", size - 1))],
        ),
        Some(_) => {
            return reply(&mut conn, "416 Range Not Satisfiable", &[("Content-Range".into(), format!("bytes */{size}"))], b"", None)
        }
        None => ("200 OK", data, vec![]),
    };
    hdrs.push(("ETag".to_string(), etag));
    if interrupt {
        // Promise the whole body, send half, hang up.
        let half = body.len() / 2;
        reply(&mut conn, status, &hdrs, &body[..half], Some(body.len()));
    } else {
        reply(&mut conn, status, &hdrs, &body, None);
    }
}

/// Deterministic filler bytes.
pub fn bytes(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}
