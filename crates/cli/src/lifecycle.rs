//! `start`, `stop`, `restart` and `logs` of a background server.

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;

use crate::client::Server;
use crate::instance::{base_url, resolve_address, InstanceFiles, InstanceState, DEFAULT_LISTEN, DEFAULT_PORT};
use crate::{sys, LogsArgs, StartArgs, StopArgs};

/// Takes `--port`, `--listen` and `--base-directory` (also `--x=v` forms) out of passed-through
/// server flags, so they are honoured wherever they were written.
pub fn lift_instance_flags(args: &[String]) -> (Vec<String>, Option<u16>, Option<String>, Option<PathBuf>) {
    let mut rest = Vec::new();
    let (mut port, mut listen, mut base) = (None, None, None);
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        let (key, inline) = match a.split_once('=') {
            Some((k, v)) if k.starts_with("--") => (k, Some(v.to_string())),
            _ => (a.as_str(), None),
        };
        let known = matches!(key, "--port" | "--listen" | "--base-directory");
        if !known {
            rest.push(a.clone());
            i += 1;
            continue;
        }
        let value = match inline {
            Some(v) => Some(v),
            None => match args.get(i + 1) {
                Some(v) if !v.starts_with("--") => {
                    i += 1;
                    Some(v.clone())
                }
                _ => None,
            },
        };
        i += 1;
        match key {
            "--port" => port = value.and_then(|v| v.parse().ok()),
            // As the server: `--listen` without a value means 0.0.0.0.
            "--listen" => listen = Some(value.unwrap_or_else(|| "0.0.0.0".to_string())),
            _ => base = value.map(PathBuf::from),
        }
    }
    (rest, port, listen, base)
}

/// Finds the port a server printed (`http://host:PORT`) in its log, for `--port 0`.
pub fn port_from_log(text: &str) -> Option<u16> {
    text.match_indices("http://").find_map(|(i, _)| {
        let rest = &text[i + 7..];
        let end = rest.find(|c: char| c.is_whitespace() || c == '/').unwrap_or(rest.len());
        let hostport = &rest[..end];
        let (_, port) = hostport.rsplit_once(':')?;
        let port: u16 = port.trim_end_matches(|c: char| !c.is_ascii_digit()).parse().ok()?;
        (port != 0).then_some(port)
    })
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// The last `n` lines of a text.
pub fn tail_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(n);
    lines[from..].join("\n")
}

fn print_log_tail(log: &Path, n: usize) {
    if let Ok(bytes) = std::fs::read(log) {
        let text = String::from_utf8_lossy(&bytes);
        eprintln!("--- last lines of {} ---\n{}", log.display(), tail_lines(&text, n));
    }
}

/// `start`: launches the server in the background and waits until it answers.
pub fn start(args: &StartArgs) -> anyhow::Result<i32> {
    start_with(args, None)
}

fn start_with(args: &StartArgs, previous: Option<InstanceState>) -> anyhow::Result<i32> {
    let (extra, lp, ll, lb) = lift_instance_flags(&args.server_args);
    let base = lb.unwrap_or_else(|| args.instance.base.base_directory.clone());
    let files = InstanceFiles::new(&base);
    if let Some(pid) = files.running_pid() {
        let (listen, port) = resolve_address(&args.instance, files.state().as_ref());
        eprintln!(
            "comfy-rs is already running for {} (pid {pid}, {}); stop it first or use another --base-directory",
            files.base.display(),
            base_url(&listen, port)
        );
        return Ok(1);
    }
    let prev = previous.as_ref();
    let listen = ll
        .or_else(|| args.instance.listen.clone())
        .or_else(|| prev.map(|p| p.listen.clone()))
        .unwrap_or_else(|| DEFAULT_LISTEN.to_string());
    let port = lp.or(args.instance.port).or(prev.map(|p| p.port)).unwrap_or(DEFAULT_PORT);
    let server_args = if extra.is_empty() { prev.map(|p| p.server_args.clone()).unwrap_or_default() } else { extra };
    if port != 0 && Server::new(&base_url(&listen, port), Duration::from_secs(2)).answers() {
        eprintln!("another server already answers on {}; choose another --port", base_url(&listen, port));
        return Ok(1);
    }
    std::fs::create_dir_all(&files.base).with_context(|| format!("cannot create {}", files.base.display()))?;
    let binary = std::env::current_exe().context("cannot find the comfy-rs binary")?;
    let log_path = files.log_file();
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open {}", log_path.display()))?;
    let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
    let mut argv = vec![
        "--listen".to_string(),
        listen.clone(),
        "--port".to_string(),
        port.to_string(),
        "--base-directory".to_string(),
        files.base.display().to_string(),
    ];
    argv.extend(server_args.iter().cloned());
    writeln!(log, "=== manage.sh start at unix time {}: {} {} ===", now_secs(), binary.display(), argv.join(" "))?;
    let err_log = log.try_clone()?;
    let mut child = Command::new(&binary)
        .args(&argv)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(err_log))
        .current_dir(&files.base)
        // Own process group: a Ctrl-C in the terminal that ran manage.sh does not reach it.
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot start {}", binary.display()))?;
    let pid = child.id();
    let mut state =
        InstanceState { pid, listen: listen.clone(), port, server_args, binary: binary.clone(), started_at: now_secs() };
    files.write(&state).context("cannot write the pid file")?;
    let deadline = Instant::now() + Duration::from_secs_f64(args.wait.max(0.1));
    loop {
        if let Some(status) = child.try_wait()? {
            files.clear();
            eprintln!("comfy-rs exited during start-up ({status})");
            print_log_tail(&log_path, 30);
            return Ok(1);
        }
        if state.port == 0 {
            if let Ok(mut f) = std::fs::File::open(&log_path) {
                let mut text = String::new();
                let _ = f.seek(SeekFrom::Start(log_start)).and_then(|_| f.read_to_string(&mut text));
                if let Some(p) = port_from_log(&text) {
                    state.port = p;
                    files.write(&state)?;
                }
            }
        }
        if state.port != 0 && Server::new(&base_url(&listen, state.port), Duration::from_secs(2)).answers() {
            println!(
                "comfy-rs started: pid {pid}, listening on {}\n  base directory: {}\n  log: {}",
                base_url(&listen, state.port),
                files.base.display(),
                log_path.display()
            );
            return Ok(0);
        }
        if Instant::now() > deadline {
            eprintln!("comfy-rs (pid {pid}) did not answer within {:.0} s; stopping it", args.wait);
            terminate(pid, Duration::from_secs(5));
            let _ = child.try_wait();
            files.clear();
            print_log_tail(&log_path, 30);
            return Ok(1);
        }
        std::thread::sleep(Duration::from_millis(150));
    }
}

/// SIGTERM, wait up to `grace`, then SIGKILL; returns true if SIGKILL was needed.
fn terminate(pid: u32, grace: Duration) -> bool {
    sys::signal(pid, libc::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if !sys::alive(pid) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if !sys::alive(pid) {
        return false;
    }
    sys::signal(pid, libc::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(5);
    while sys::alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

/// `stop`: graceful SIGTERM, SIGKILL after the timeout; removes the pid file.
pub fn stop(args: &StopArgs) -> anyhow::Result<i32> {
    let files = InstanceFiles::new(&args.instance.base.base_directory);
    let Some(pid) = files.running_pid() else {
        if files.pid().is_some() {
            files.clear();
            println!("comfy-rs is not running (removed a stale pid file in {})", files.base.display());
        } else {
            println!("comfy-rs is not running (no pid file in {})", files.base.display());
        }
        return Ok(0);
    };
    let killed = terminate(pid, Duration::from_secs_f64(args.timeout.max(0.0)));
    if sys::alive(pid) {
        eprintln!("comfy-rs (pid {pid}) is still alive after SIGKILL");
        return Ok(1);
    }
    files.clear();
    if killed {
        println!("comfy-rs (pid {pid}) did not exit within {:.0} s of SIGTERM and was killed", args.timeout);
    } else {
        println!("comfy-rs stopped (pid {pid})");
    }
    Ok(0)
}

/// `restart`: stop (if running), then start with the given flags, or the previous ones.
pub fn restart(args: &StartArgs) -> anyhow::Result<i32> {
    let (_, _, _, lb) = lift_instance_flags(&args.server_args);
    let base = lb.unwrap_or_else(|| args.instance.base.base_directory.clone());
    let files = InstanceFiles::new(&base);
    let previous = files.state();
    let stop_args = StopArgs { instance: args.instance.clone(), timeout: 10.0 };
    let mut stop_args = stop_args;
    stop_args.instance.base.base_directory = base;
    let code = stop(&stop_args)?;
    if code != 0 {
        return Ok(code);
    }
    start_with(args, previous)
}

/// `logs`: the last lines of the log; with `--follow`, new lines as they come.
pub fn logs(args: &LogsArgs) -> anyhow::Result<i32> {
    let files = InstanceFiles::new(&args.base.base_directory);
    let path = files.log_file();
    let Ok(mut f) = std::fs::File::open(&path) else {
        eprintln!("no log file at {} (start the server with --action start)", path.display());
        return Ok(1);
    };
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes)?;
    let text = String::from_utf8_lossy(&bytes);
    let tail = tail_lines(&text, args.lines);
    let mut out = std::io::stdout();
    if !tail.is_empty() {
        writeln!(out, "{tail}")?;
    }
    out.flush()?;
    if !args.follow {
        return Ok(0);
    }
    let mut pos = bytes.len() as u64;
    let mut buf = Vec::new();
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        if len < pos {
            // Truncated or replaced: start from its beginning.
            f = match std::fs::File::open(&path) {
                Ok(f) => f,
                Err(_) => continue,
            };
            pos = 0;
        }
        if len > pos {
            f.seek(SeekFrom::Start(pos))?;
            buf.clear();
            Read::by_ref(&mut f).take(len - pos).read_to_end(&mut buf)?;
            pos += buf.len() as u64;
            if out.write_all(&buf).and_then(|_| out.flush()).is_err() {
                // The reader went away (e.g. `| head`).
                return Ok(0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn lifts_instance_flags_from_passthrough() {
        let (rest, port, listen, base) = lift_instance_flags(&s(&["--cpu", "--port", "9001", "--base-directory=/b", "--listen"]));
        assert_eq!(rest, s(&["--cpu"]));
        assert_eq!(port, Some(9001));
        assert_eq!(listen.as_deref(), Some("0.0.0.0"));
        assert_eq!(base, Some(PathBuf::from("/b")));
        let (rest, _, listen, _) = lift_instance_flags(&s(&["--listen", "10.0.0.1", "--preview-method", "auto"]));
        assert_eq!(listen.as_deref(), Some("10.0.0.1"));
        assert_eq!(rest, s(&["--preview-method", "auto"]));
    }

    #[test]
    fn finds_port_in_log() {
        assert_eq!(port_from_log("Starting server\nTo see the GUI go to: http://127.0.0.1:43127\n"), Some(43127));
        assert_eq!(port_from_log("listening on http://[::1]:8188/ now"), Some(8188));
        assert_eq!(port_from_log("no url"), None);
    }

    #[test]
    fn tails() {
        assert_eq!(tail_lines("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail_lines("a", 5), "a");
    }
}
