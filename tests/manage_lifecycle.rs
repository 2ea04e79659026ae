//! `manage.sh` start/stop/restart/status/logs/gpu-info and usage errors, against the real binary.

mod manage_support;

use manage_support::*;

#[test]
fn usage_errors_exit_2() {
    let o = manage("bogus-action", &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("unknown action"));
    let o = std::process::Command::new("bash").arg(root().join("manage.sh")).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    let o = manage("import-workflow", &[]);
    assert_eq!(o.status.code(), Some(2), "missing --workflow: {}", text(&o));
    assert!(text(&o).contains("--workflow"));
    let o = manage("stop", &["--no-such-flag"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn help_for_script_and_actions() {
    let o = std::process::Command::new("bash").arg(root().join("manage.sh")).arg("--help").output().unwrap();
    let t = ok(o);
    for a in ["start", "stop", "restart", "status", "logs", "gpu-info", "download-models", "list-models", "import-workflow", "execute-workflow", "demo"] {
        assert!(t.contains(a), "script help lists {a}");
        let h = ok(manage(a, &["--help"]));
        assert!(h.contains("Usage"), "{a} --help: {h}");
    }
    let h = ok(manage("execute-workflow", &["--help"]));
    assert!(h.contains("--output") && h.contains("--server") && h.contains("--timeout"));
}

#[test]
fn gpu_info_reports_gpu_or_cpu() {
    let t = ok(manage("gpu-info", &[]));
    assert!(t.contains("NVIDIA GPU") || (t.contains("No NVIDIA GPU found") && t.contains("CPU:") && t.contains("RAM:")), "{t}");
}

#[test]
fn start_status_logs_restart_stop() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("inst");
    let b = base.to_str().unwrap();
    // Not running yet: status exits 3 (a port nobody uses, in case 8188 is taken on this host).
    let idle = free_port().to_string();
    let o = manage("status", &["--base-directory", b, "--port", &idle]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));

    let server = Running::start(&base);
    let pid = recorded_pid(&base).expect("pid file");
    assert!(pid_alive(pid));
    assert!(base.join("comfy-rs.log").exists());

    // A second start for the same base directory is refused.
    let o = manage("start", &["--base-directory", b, "--port", &free_port().to_string()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("already running"));
    assert_eq!(recorded_pid(&base), Some(pid));

    let t = ok(manage("status", &["--base-directory", b]));
    assert!(t.contains(&format!("running (pid {pid})")), "{t}");
    assert!(t.contains(&server.url()), "{t}");
    assert!(t.contains("version:") && t.contains("device:") && t.contains("queue:     0 running, 0 pending"), "{t}");
    assert!(t.contains("disk:") && t.contains("free of"), "{t}");

    let t = ok(manage("logs", &["--base-directory", b, "-n", "200"]));
    assert!(t.contains("manage.sh start"), "{t}");
    assert!(t.contains(&format!(":{}", server.port)), "log names the port: {t}");

    // Restart keeps the recorded flags (same port) and gives a new pid.
    ok(manage("restart", &["--base-directory", b]));
    let pid2 = recorded_pid(&base).expect("pid after restart");
    assert_ne!(pid, pid2);
    assert!(!pid_alive(pid), "old process is gone");
    let t = ok(manage("status", &["--base-directory", b]));
    assert!(t.contains(&server.url()), "same address after restart: {t}");

    let t = ok(manage("stop", &["--base-directory", b]));
    assert!(t.contains("stopped"), "{t}");
    assert!(!pid_alive(pid2));
    assert!(recorded_pid(&base).is_none());
    let t = ok(manage("stop", &["--base-directory", b]));
    assert!(t.contains("not running"), "{t}");
    assert_eq!(manage("status", &["--base-directory", b, "--port", &idle]).status.code(), Some(3));
}

#[test]
fn two_instances_side_by_side() {
    let dir = tempfile::tempdir().unwrap();
    let a = Running::start(&dir.path().join("a"));
    let b = Running::start(&dir.path().join("b"));
    assert_ne!(a.port, b.port);
    for s in [&a, &b] {
        let t = ok(manage("status", &["--base-directory", s.base.to_str().unwrap()]));
        assert!(t.contains(&s.url()), "{t}");
    }
    ok(manage("stop", &["--base-directory", a.base.to_str().unwrap()]));
    // b is unaffected.
    let t = ok(manage("status", &["--base-directory", b.base.to_str().unwrap()]));
    assert!(t.contains("running"), "{t}");
}

#[test]
fn port_in_use_and_failed_start_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let a = Running::start(&dir.path().join("a"));
    // Another base directory, same port: refused before spawning.
    let other = dir.path().join("b");
    let o = manage("start", &["--base-directory", other.to_str().unwrap(), "--port", &a.port.to_string()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("already answers"), "{}", text(&o));
    // A server flag the binary rejects: start fails with the log's last lines, no pid file left.
    let o = manage("start", &["--base-directory", other.to_str().unwrap(), "--port", &free_port().to_string(), "--preview-method", "bogus"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("exited during start-up"), "{}", text(&o));
    assert!(recorded_pid(&other).is_none());
}

#[test]
fn logs_follow_prints_new_lines() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("comfy-rs.log"), "first line\n").unwrap();
    let mut child = std::process::Command::new("bash")
        .arg(root().join("manage.sh"))
        .args(["--action", "logs", "--follow", "--base-directory", dir.path().to_str().unwrap()])
        .env("COMFY_RS_BIN", env!("CARGO_BIN_EXE_comfy-rs"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(700));
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).open(dir.path().join("comfy-rs.log")).unwrap();
        writeln!(f, "second line").unwrap();
    }
    std::thread::sleep(std::time::Duration::from_millis(900));
    child.kill().unwrap();
    child.wait().unwrap();
    let mut out = String::new();
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    assert!(out.contains("first line") && out.contains("second line"), "{out}");
}
