//! Server bench (`cargo bench -p comfy-server`, harness = false). Prints:
//! - cold start: process spawn -> first `200` from `/system_stats` (median of 5),
//! - accepted `POST /prompt` per second for a small graph (keep-alive clients),
//! - idle RSS of the server process.
//!
//! It runs the real `comfy-rs` binary: `$COMFY_RS_BIN`, else `comfy-rs` next to the bench's
//! target profile directory (build it first: `cargo build --release`). Without a binary it
//! measures an in-process server instead (no RSS figure then), and says so.
//! Targets: cold start < 200 ms, > 2000 prompts/s, idle RSS < 50 MB.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn find_binary() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("COMFY_RS_BIN") {
        return Some(PathBuf::from(p));
    }
    let exe = std::env::current_exe().ok()?;
    // target/<profile>/deps/server_bench-xxxx -> target/<profile>/comfy-rs
    let profile_dir = exe.parent()?.parent()?;
    let target = profile_dir.parent()?;
    [
        profile_dir.join("comfy-rs"),
        target.join("release/comfy-rs"),
        target.join("debug/comfy-rs"),
    ]
    .into_iter()
    .find(|p| p.is_file())
}

/// One keep-alive HTTP/1.1 connection.
struct Conn {
    stream: BufReader<TcpStream>,
}

impl Conn {
    fn open(port: u16) -> std::io::Result<Conn> {
        let s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(Conn {
            stream: BufReader::new(s),
        })
    }

    fn request(
        &mut self,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> std::io::Result<(u16, Vec<u8>)> {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let w = self.stream.get_mut();
        w.write_all(head.as_bytes())?;
        w.write_all(body)?;
        let mut status = 0u16;
        let mut len = 0usize;
        let mut line = String::new();
        loop {
            line.clear();
            if self.stream.read_line(&mut line)? == 0 {
                return Err(std::io::Error::other("closed"));
            }
            let l = line.trim_end();
            if status == 0 {
                status = l
                    .split_whitespace()
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
            } else if l.is_empty() {
                break;
            } else if let Some((k, v)) = l.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0; len];
        self.stream.read_exact(&mut body)?;
        Ok((status, body))
    }
}

fn get_ok(port: u16, path: &str) -> bool {
    Conn::open(port)
        .and_then(|mut c| c.request("GET", path, b""))
        .map(|(s, _)| s == 200)
        .unwrap_or(false)
}

fn spawn(bin: &PathBuf, base: &std::path::Path) -> (Child, u16) {
    let mut child = Command::new(bin)
        .arg("--base-directory")
        .arg(base)
        .args(["--port", "0"])
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn comfy-rs");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    loop {
        line.clear();
        if out.read_line(&mut line).unwrap_or(0) == 0 {
            panic!("comfy-rs exited before printing its URL");
        }
        if let Some(url) = line.trim().strip_prefix("To see the GUI go to: ") {
            let port = url
                .rsplit(':')
                .next()
                .and_then(|p| p.parse().ok())
                .expect("port");
            std::thread::spawn(move || {
                let mut sink = String::new();
                while out.read_line(&mut sink).unwrap_or(0) > 0 {
                    sink.clear();
                }
            });
            return (child, port);
        }
    }
}

fn cold_start(bin: &PathBuf) -> Duration {
    let base = tempfile::tempdir().expect("temp dir");
    let t0 = Instant::now();
    let (mut child, port) = spawn(bin, base.path());
    while !get_ok(port, "/system_stats") {
        std::thread::sleep(Duration::from_micros(500));
    }
    let d = t0.elapsed();
    let _ = child.kill();
    let _ = child.wait();
    d
}

const PROMPT: &str = r#"{"prompt": {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}}, "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}}, "client_id": "bench"}"#;

fn prompt_rate(port: u16, threads: usize, secs: f64) -> (f64, u64) {
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let bad = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (stop, ok, bad) = (stop.clone(), ok.clone(), bad.clone());
            std::thread::spawn(move || {
                let mut c = Conn::open(port).expect("connect");
                while !stop.load(Ordering::Relaxed) {
                    match c.request("POST", "/prompt", PROMPT.as_bytes()) {
                        Ok((200, _)) => ok.fetch_add(1, Ordering::Relaxed),
                        _ => bad.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        let _ = h.join();
    }
    (
        ok.load(Ordering::Relaxed) as f64 / t0.elapsed().as_secs_f64(),
        bad.load(Ordering::Relaxed),
    )
}

fn main() {
    let threads = 4;
    match find_binary() {
        Some(bin) => {
            println!("binary: {}", bin.display());
            let mut starts: Vec<Duration> = (0..5).map(|_| cold_start(&bin)).collect();
            starts.sort();
            println!("cold start to first 200 /system_stats: median {:.1} ms (min {:.1}, max {:.1})  [target < 200 ms]",
                starts[2].as_secs_f64() * 1e3, starts[0].as_secs_f64() * 1e3, starts[4].as_secs_f64() * 1e3);
            let base = tempfile::tempdir().expect("temp dir");
            let (mut child, port) = spawn(&bin, base.path());
            while !get_ok(port, "/system_stats") {
                std::thread::sleep(Duration::from_millis(1));
            }
            std::thread::sleep(Duration::from_secs(1));
            let rss = comfy_server::sysinfo::rss_of(child.id()).unwrap_or(0);
            println!(
                "idle RSS: {:.1} MB  [target < 50 MB]",
                rss as f64 / 1048576.0
            );
            let (rate, bad) = prompt_rate(port, threads, 3.0);
            println!("accepted POST /prompt: {rate:.0}/s with {threads} keep-alive clients ({bad} non-200)  [target > 2000/s]");
            let rss = comfy_server::sysinfo::rss_of(child.id()).unwrap_or(0);
            println!(
                "RSS after the prompt burst: {:.1} MB",
                rss as f64 / 1048576.0
            );
            let _ = child.kill();
            let _ = child.wait();
        }
        None => {
            println!("comfy-rs binary not found (set COMFY_RS_BIN or run `cargo build --release` first);");
            println!(
                "measuring an in-process server instead (no cold-start process cost, no RSS)."
            );
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let base = tempfile::tempdir().expect("temp dir");
            let t0 = Instant::now();
            let config = comfy_server::ServerConfig {
                base_directory: base.path().into(),
                port: 0,
                ..Default::default()
            };
            let state = comfy_server::AppState::start(&config, comfy_nodes::registry(), vec![])
                .expect("state");
            let listener = rt
                .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
                .expect("bind");
            let port = listener.local_addr().expect("addr").port();
            rt.spawn(comfy_server::serve(
                state,
                vec![listener],
                std::future::pending(),
            ));
            while !get_ok(port, "/system_stats") {
                std::thread::sleep(Duration::from_micros(200));
            }
            println!(
                "in-process start to first 200 /system_stats: {:.1} ms",
                t0.elapsed().as_secs_f64() * 1e3
            );
            let (rate, bad) = prompt_rate(port, threads, 3.0);
            println!("accepted POST /prompt: {rate:.0}/s with {threads} keep-alive clients ({bad} non-200)  [target > 2000/s]");
        }
    }
}
