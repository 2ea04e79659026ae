//! `status`: the process, what the server says about itself, local models and free disk.

use std::time::Duration;

use comfy_graph::Folders;
use comfy_hub::progress::human_bytes;
use serde_json::Value as Json;

use crate::client::Server;
use crate::instance::{base_url, resolve_address, InstanceFiles};
use crate::models::{check_header, model_files};
use crate::{sys, InstanceArgs, EXIT_NOT_RUNNING};

/// Lines describing a running server from its `/system_stats` and `/queue` answers.
pub fn describe_server(stats: &Json, queue: Option<&Json>) -> Vec<String> {
    let mut out = Vec::new();
    let sys_ = &stats["system"];
    let version = sys_.get("comfyui_version").and_then(Json::as_str).unwrap_or("?");
    out.push(format!("version:   {version}"));
    let devices: Vec<String> = stats
        .get("devices")
        .and_then(Json::as_array)
        .map(|a| {
            a.iter()
                .map(|d| {
                    let name = d.get("name").and_then(Json::as_str).unwrap_or("?");
                    match (d.get("vram_total").and_then(Json::as_u64), d.get("vram_free").and_then(Json::as_u64)) {
                        (Some(t), Some(f)) if t > 0 => format!("{name} ({} free of {})", human_bytes(f), human_bytes(t)),
                        _ => name.to_string(),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    out.push(format!("device:    {}", if devices.is_empty() { "?".to_string() } else { devices.join(", ") }));
    if let Some(q) = queue {
        let n = |k: &str| q.get(k).and_then(Json::as_array).map(|a| a.len()).unwrap_or(0);
        out.push(format!("queue:     {} running, {} pending", n("queue_running"), n("queue_pending")));
    }
    // comfy-rs's own section: the process's memory and the models kept loaded between prompts.
    let ours = &stats["comfy_rs"];
    if let Some(rss) = ours.get("process_rss").and_then(Json::as_u64) {
        out.push(format!("memory:    {} resident (process)", human_bytes(rss)));
    }
    if let Some(models) = ours.get("resident_models").and_then(Json::as_array) {
        out.push(format!("loaded:    {} model(s) resident", models.len()));
        for m in models {
            let kind = m.get("kind").and_then(Json::as_str).unwrap_or("?");
            let name = m.get("name").and_then(Json::as_str).unwrap_or("?");
            let bytes = m.get("bytes").and_then(Json::as_u64).unwrap_or(0);
            out.push(format!("  {kind} {name} ({})", human_bytes(bytes)));
        }
    }
    out
}

/// `status`; exit code 0 when the server runs and answers, 3 when it is not running,
/// 1 when its process runs but does not answer.
pub fn status(args: &InstanceArgs) -> anyhow::Result<i32> {
    let files = InstanceFiles::new(&args.base.base_directory);
    let state = files.state();
    let (listen, port) = resolve_address(args, state.as_ref());
    let url = base_url(&listen, port);
    let pid = files.running_pid();
    let server = Server::new(&url, Duration::from_secs(3));
    let stats = server.get_json("/system_stats").ok();
    let code = match (pid, &stats) {
        (Some(pid), Some(_)) => {
            println!("comfy-rs is running (pid {pid})");
            0
        }
        (None, Some(_)) => {
            println!("a server answers (not started by manage.sh for {})", files.base.display());
            0
        }
        (Some(pid), None) => {
            println!("comfy-rs process {pid} is alive but {url} does not answer");
            1
        }
        (None, None) => {
            println!("comfy-rs is not running (base directory {})", files.base.display());
            EXIT_NOT_RUNNING
        }
    };
    if let Some(stats) = &stats {
        println!("listen:    {url} (--listen {listen})");
        let queue = server.get_json("/queue").ok();
        for l in describe_server(stats, queue.as_ref()) {
            println!("{l}");
        }
    }
    let folders = Folders::new(&files.base);
    let (models, partial) = model_files(&folders);
    println!("models:    {} file(s) under {}", models.len(), files.base.join("models").display());
    for m in &models {
        println!("  {}/{:<40} {:>10}  {}", m.folder, m.name, human_bytes(m.size), check_header(&m.path).label());
    }
    for p in &partial {
        println!("  partial download: {}", p.display());
    }
    match sys::disk_space(&files.base).or_else(|| sys::disk_space(std::path::Path::new("."))) {
        Some((free, total)) => println!("disk:      {} free of {}", human_bytes(free), human_bytes(total)),
        None => println!("disk:      unknown"),
    }
    println!("log:       {}", files.log_file().display());
    Ok(code)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn describes_stats_and_queue() {
        let stats = json!({"system": {"comfyui_version": "0.29.0"},
            "devices": [{"name": "cpu", "type": "cpu", "vram_total": 0, "vram_free": 0}]});
        let q = json!({"queue_running": [[0]], "queue_pending": [[1], [2]]});
        let l = super::describe_server(&stats, Some(&q));
        assert_eq!(l, vec!["version:   0.29.0", "device:    cpu", "queue:     1 running, 2 pending"]);
        let stats = json!({"system": {"comfyui_version": "0.29.0"}, "devices": [],
            "comfy_rs": {"process_rss": 1024, "resident_models": [
                {"kind": "checkpoint", "name": "tiny.safetensors", "path": "/m/tiny.safetensors", "bytes": 2048}]}});
        let l = super::describe_server(&stats, None);
        assert_eq!(l[2..].to_vec(), vec!["memory:    1.0 KiB resident (process)", "loaded:    1 model(s) resident", "  checkpoint tiny.safetensors (2.0 KiB)"]);
    }
}
