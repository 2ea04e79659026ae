//! `gpu-info`: NVIDIA GPUs through `nvidia-smi`, otherwise the CPU and RAM.

use std::process::Command;

use comfy_hub::progress::human_bytes;

use crate::sys;

/// One GPU as `nvidia-smi` reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Gpu {
    pub index: u32,
    pub name: String,
    /// Bytes.
    pub memory_total: u64,
    /// Bytes.
    pub memory_free: u64,
    pub driver: String,
}

/// Parses `nvidia-smi --query-gpu=index,name,memory.total,memory.free,driver_version
/// --format=csv,noheader,nounits` (memory in MiB).
pub fn parse_query(text: &str) -> Vec<Gpu> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').map(str::trim).collect();
            if f.len() < 5 {
                return None;
            }
            let mib = |s: &str| s.parse::<u64>().ok().map(|m| m * 1024 * 1024);
            Some(Gpu {
                index: f[0].parse().ok()?,
                name: f[1].to_string(),
                memory_total: mib(f[2])?,
                memory_free: mib(f[3]).unwrap_or(0),
                driver: f[4].to_string(),
            })
        })
        .collect()
}

/// The `CUDA Version: 12.4` of `nvidia-smi`'s banner.
pub fn parse_cuda_version(banner: &str) -> Option<String> {
    let i = banner.find("CUDA Version:")?;
    banner[i + 13..].split_whitespace().next().map(|s| s.trim_matches('|').to_string()).filter(|s| !s.is_empty())
}

/// The GPUs `nvidia-smi` lists and the CUDA version, or `None` when it is missing or fails.
pub fn nvidia_gpus() -> Option<(Vec<Gpu>, Option<String>)> {
    let out = Command::new("nvidia-smi")
        .args(["--query-gpu=index,name,memory.total,memory.free,driver_version", "--format=csv,noheader,nounits"])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let gpus = parse_query(&String::from_utf8_lossy(&out.stdout));
    if gpus.is_empty() {
        return None;
    }
    let cuda = Command::new("nvidia-smi")
        .output()
        .ok()
        .and_then(|o| parse_cuda_version(&String::from_utf8_lossy(&o.stdout)));
    Some((gpus, cuda))
}

/// The CPU model name from `/proc/cpuinfo`.
pub fn cpu_model() -> Option<String> {
    let text = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    text.lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
}

/// `gpu-info`.
pub fn gpu_info() -> anyhow::Result<i32> {
    match nvidia_gpus() {
        Some((gpus, cuda)) => {
            println!("{} NVIDIA GPU(s) (CUDA {}):", gpus.len(), cuda.as_deref().unwrap_or("unknown"));
            for g in &gpus {
                println!(
                    "  [{}] {}: {} total, {} free, driver {}",
                    g.index,
                    g.name,
                    human_bytes(g.memory_total),
                    human_bytes(g.memory_free),
                    g.driver
                );
            }
        }
        None => {
            println!("No NVIDIA GPU found (nvidia-smi missing or no device); comfy-rs runs on the CPU.");
            let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
            println!("  CPU: {} ({cores} threads)", cpu_model().unwrap_or_else(|| "unknown".into()));
            if let Some((total, avail)) = sys::ram() {
                println!("  RAM: {} total, {} available", human_bytes(total), human_bytes(avail));
            }
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nvidia_smi() {
        let q = "0, NVIDIA H200, 143771, 143000, 550.54.15\n1, NVIDIA GeForce RTX 4090, 24564, 23000, 550.54.15\n";
        let g = parse_query(q);
        assert_eq!(g.len(), 2);
        assert_eq!(g[0].name, "NVIDIA H200");
        assert_eq!(g[1].memory_total, 24564 * 1024 * 1024);
        let banner = "| NVIDIA-SMI 550.54.15    Driver Version: 550.54.15    CUDA Version: 12.4     |";
        assert_eq!(parse_cuda_version(banner).as_deref(), Some("12.4"));
        assert_eq!(parse_cuda_version("nothing"), None);
    }
}
