//! Host facts for `/system_stats` and the bench: RAM from `/proc/meminfo`, RSS from `/proc/self/status`.

/// Total and available RAM in bytes (`MemTotal`, `MemAvailable`); zeros when unreadable.
pub fn ram() -> (u64, u64) {
    let Ok(text) = std::fs::read_to_string("/proc/meminfo") else {
        return (0, 0);
    };
    parse_meminfo(&text)
}

fn kib_field(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|rest| rest.trim_start_matches(':').split_whitespace().next())
        .and_then(|n| n.parse::<u64>().ok())
        .map(|kib| kib * 1024)
}

/// `(MemTotal, MemAvailable)` in bytes from the text of `/proc/meminfo`.
pub fn parse_meminfo(text: &str) -> (u64, u64) {
    let total = kib_field(text, "MemTotal").unwrap_or(0);
    let free = kib_field(text, "MemAvailable")
        .or_else(|| kib_field(text, "MemFree"))
        .unwrap_or(0);
    (total, free)
}

/// Resident set size of a process in bytes (`VmRSS` of `/proc/<pid>/status`).
pub fn rss_of(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    kib_field(&text, "VmRSS")
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_meminfo() {
        let t = "MemTotal:       16384 kB\nMemFree:    100 kB\nMemAvailable:    8192 kB\n";
        assert_eq!(super::parse_meminfo(t), (16384 * 1024, 8192 * 1024));
    }

    #[test]
    fn real_ram_is_nonzero_on_linux() {
        let (t, f) = super::ram();
        assert!(t > 0 && f > 0 && f <= t);
    }
}
