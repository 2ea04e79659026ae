//! Optional wall- and CPU-time accounting of the hot ops, for benchmarks: off by default (one
//! relaxed atomic load per op), switched on with [`set_enabled`].

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

static ENABLED: AtomicBool = AtomicBool::new(false);
static TABLE: Mutex<BTreeMap<String, Entry>> = Mutex::new(BTreeMap::new());

/// Accumulated time of one op label.
#[derive(Debug, Clone, Copy, Default)]
pub struct Entry {
    /// Wall time.
    pub wall: Duration,
    /// Process CPU time (all threads; zero where not available).
    pub cpu: Duration,
    /// Calls.
    pub calls: u64,
}

/// CPU time of the whole process (`CLOCK_PROCESS_CPUTIME_ID`), zero off Linux.
fn process_cpu() -> Duration {
    #[cfg(target_os = "linux")]
    {
        #[repr(C)]
        struct Timespec {
            tv_sec: i64,
            tv_nsec: i64,
        }
        extern "C" {
            fn clock_gettime(clk: i32, ts: *mut Timespec) -> i32;
        }
        const CLOCK_PROCESS_CPUTIME_ID: i32 = 2;
        let mut ts = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid timespec (64-bit Linux layout) for the call to fill.
        if unsafe { clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &mut ts) } == 0 {
            return Duration::new(
                ts.tv_sec.max(0) as u64,
                ts.tv_nsec.clamp(0, 999_999_999) as u32,
            );
        }
    }
    Duration::ZERO
}

/// Turns the accounting on or off (it starts off).
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// Times and call count per op label since the last call, largest CPU time first.
pub fn take() -> Vec<(String, Entry)> {
    let mut table = TABLE.lock().unwrap_or_else(|e| e.into_inner());
    let mut v: Vec<_> = std::mem::take(&mut *table).into_iter().collect();
    v.sort_by(|a, b| b.1.cpu.cmp(&a.1.cpu).then(b.1.wall.cmp(&a.1.wall)));
    v
}

/// Records the time from its creation to its drop under a label (when enabled).
pub(crate) struct Scope {
    start: Option<(Instant, Duration, String)>,
}

/// Starts timing an op; `label` is only built when the accounting is on.
pub(crate) fn scope(label: impl FnOnce() -> String) -> Scope {
    if ENABLED.load(Ordering::Relaxed) {
        Scope {
            start: Some((Instant::now(), process_cpu(), label())),
        }
    } else {
        Scope { start: None }
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        if let Some((t, c, label)) = self.start.take() {
            let wall = t.elapsed();
            let cpu = process_cpu().saturating_sub(c);
            let mut table = TABLE.lock().unwrap_or_else(|e| e.into_inner());
            let e = table.entry(label).or_default();
            e.wall += wall;
            e.cpu += cpu;
            e.calls += 1;
        }
    }
}
