//! Shared helpers of the server end-to-end tests: boot the real `comfy-rs` binary on an
//! ephemeral port with a temporary base directory, and a minimal raw HTTP/1.1 client (raw so
//! tests can send exactly the bytes a hostile client would: odd paths, origins, sizes).
#![allow(dead_code)]

pub mod png;
pub mod ws;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value as Json};

/// A running server process; killed on drop.
pub struct Server {
    child: Child,
    pub port: u16,
    pub base: tempfile::TempDir,
}

/// One HTTP response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn json(&self) -> Json {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn decode_chunked(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(pos) = data.windows(2).position(|w| w == b"\r\n") else {
            break;
        };
        let size_line = std::str::from_utf8(&data[..pos]).unwrap_or("0");
        let size = usize::from_str_radix(size_line.split(';').next().unwrap_or("0").trim(), 16)
            .unwrap_or(0);
        data = &data[pos + 2..];
        if size == 0 || data.len() < size {
            break;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[(size + 2).min(data.len())..];
    }
    out
}

/// Parses a complete `Connection: close` HTTP/1.1 response.
pub fn parse_response(raw: &[u8]) -> Resp {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("no header end in response");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| {
            l.split_once(':')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        })
        .collect();
    let body = &raw[split + 4..];
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    let body = if chunked {
        decode_chunked(body)
    } else {
        body.to_vec()
    };
    Resp {
        status,
        headers,
        body,
    }
}

impl Server {
    /// Starts `comfy-rs` with `--base-directory <temp> --port 0` plus `args`.
    pub fn start(args: &[&str]) -> Server {
        let base = tempfile::tempdir().expect("temp dir");
        Self::start_in(base, args)
    }

    /// Starts in an existing base directory (which the test may have filled first).
    pub fn start_in(base: tempfile::TempDir, args: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_comfy-rs"))
            .arg("--base-directory")
            .arg(base.path())
            .args(["--port", "0"])
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn comfy-rs");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("To see the GUI go to: ") {
                    let _ = tx.send(url.to_string());
                }
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("server did not print its URL");
        let port: u16 = url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port in URL");
        let server = Server { child, port, base };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = server.try_request("GET", "/system_stats", &[], b"") {
                if r.status == 200 {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "server never answered /system_stats"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    pub fn path(&self, rel: &str) -> std::path::PathBuf {
        self.base.path().join(rel)
    }

    /// Sends one request; `headers` are added after Host/Connection/Content-Length.
    pub fn try_request(
        &self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<Resp> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(Duration::from_secs(60)))?;
        let mut req = format!("{method} {target} HTTP/1.1\r\n");
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
            req.push_str(&format!("Host: 127.0.0.1:{}\r\n", self.port));
        }
        req.push_str("Connection: close\r\n");
        if !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        {
            req.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes())?;
        // The server may answer (413) before reading the body; ignore a failed body write.
        let _ = s.write_all(body);
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw);
        if raw.is_empty() {
            return Err(std::io::Error::other("empty response"));
        }
        Ok(parse_response(&raw))
    }

    pub fn request(
        &self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Resp {
        self.try_request(method, target, headers, body)
            .unwrap_or_else(|e| panic!("{method} {target}: {e}"))
    }

    pub fn get(&self, target: &str) -> Resp {
        self.request("GET", target, &[], b"")
    }

    pub fn post_json(&self, target: &str, body: &Json) -> Resp {
        self.request(
            "POST",
            target,
            &[("Content-Type", "application/json")],
            body.to_string().as_bytes(),
        )
    }

    /// Multipart form: `(name, Some(filename), bytes)` for files, `(name, None, bytes)` for fields.
    pub fn post_multipart(&self, target: &str, parts: &[(&str, Option<&str>, &[u8])]) -> Resp {
        let boundary = "----comfyrsboundary7f3a";
        let mut body = Vec::new();
        for (name, file, data) in parts {
            body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
            match file {
                Some(f) => body.extend_from_slice(
                    format!("Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes(),
                ),
                None => body.extend_from_slice(format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes()),
            }
            body.extend_from_slice(data);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        let ct = format!("multipart/form-data; boundary={boundary}");
        self.request("POST", target, &[("Content-Type", &ct)], &body)
    }

    /// Submits a prompt (200 expected) and returns its id.
    pub fn submit(&self, prompt: &Json, client_id: Option<&str>) -> String {
        let mut body = json!({"prompt": prompt});
        if let Some(c) = client_id {
            body["client_id"] = json!(c);
        }
        let r = self.post_json("/prompt", &body);
        assert_eq!(r.status, 200, "POST /prompt: {}", r.text());
        r.json()["prompt_id"]
            .as_str()
            .expect("prompt_id")
            .to_string()
    }

    /// Polls `/history/{id}` until the entry appears.
    pub fn wait_history(&self, id: &str) -> Json {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let r = self.get(&format!("/history/{id}"));
            assert_eq!(r.status, 200);
            let v = r.json();
            if let Some(e) = v.get(id) {
                return e.clone();
            }
            assert!(
                Instant::now() < deadline,
                "prompt {id} never reached history"
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Sends SIGTERM and waits for the exit status; hands back the base directory.
    pub fn terminate(mut self) -> (std::process::ExitStatus, tempfile::TempDir) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                let base =
                    std::mem::replace(&mut self.base, tempfile::tempdir().expect("temp dir"));
                return (st, base);
            }
            assert!(Instant::now() < deadline, "server did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `f` every 20 ms until it holds; panics after two minutes naming `what`.
pub fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// EmptyImage -> ImageBlur -> SaveImage, the reference client-flow graph.
pub fn blur_graph(prefix: &str, width: u32) -> Json {
    json!({
        "1": {"class_type": "EmptyImage", "inputs": {"width": width, "height": width, "batch_size": 1, "color": 16711680}},
        "2": {"class_type": "ImageBlur", "inputs": {"image": ["1", 0], "blur_radius": 3, "sigma": 1.5}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": prefix}}
    })
}

/// A graph that takes a while: a big image through a chain of wide blurs.
pub fn slow_graph(prefix: &str, blurs: usize) -> Json {
    let mut g = serde_json::Map::new();
    g.insert("1".into(), json!({"class_type": "EmptyImage", "inputs": {"width": 512, "height": 512, "batch_size": 1, "color": 123456}}));
    let mut last = "1".to_string();
    for i in 0..blurs {
        let id = format!("{}", 10 + i);
        g.insert(id.clone(), json!({"class_type": "ImageBlur", "inputs": {"image": [last, 0], "blur_radius": 31, "sigma": 10.0}}));
        last = id;
    }
    g.insert("99".into(), json!({"class_type": "SaveImage", "inputs": {"images": [last, 0], "filename_prefix": prefix}}));
    Json::Object(g)
}

/// A small valid RGBA PNG (alpha `alpha` everywhere) with a `prompt` tEXt chunk.
pub fn tiny_png(w: u32, h: u32, alpha: u8) -> Vec<u8> {
    png::rgba_png(w, h, &[("prompt", "{\"x\": 1}")], |x, y| [(x * 40) as u8, (y * 40) as u8, 200, alpha])
}
