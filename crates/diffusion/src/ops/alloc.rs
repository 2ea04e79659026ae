//! Process-wide allocator tuning for the CPU models.

/// Bytes of free memory at the top of a malloc heap kept for reuse before glibc returns it
/// to the OS.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD: usize = 1 << 30;

/// Extra bytes glibc requests whenever a heap grows (untouched pages cost no memory).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TOP_PAD: usize = 256 << 20;

/// Blocks at least this large are mapped and unmapped one by one instead of coming from a
/// heap: glibc's maximum (32 MiB on 64-bit targets).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: usize = 32 << 20;

/// Tunes glibc's `malloc` for the models' allocation pattern; call once at start-up,
/// before other threads allocate. A no-op on other platforms and C libraries.
///
/// Every CPU op allocates its output, and activations are megabytes each. By default glibc
/// serves such blocks with a fresh `mmap` and unmaps them on free, and trims the heap top
/// as soon as 128 KiB are free, so each op page-faults and zero-fills new pages (about
/// 10 % of a UNet step). This raises the mmap threshold to its maximum (32 MiB), grows
/// heaps 256 MiB at a time (untouched pages cost nothing) and keeps up to 1 GiB of free
/// heap top, so freed activations are reused by the next op.
/// Memory stays bounded: what is kept is at most the peak the models already reached, and
/// a heap top beyond the threshold is still returned; [`release_memory`] hands the rest
/// back (freed weights of an unloaded model stay resident until then, since heap blocks
/// below 32 MiB are reused rather than unmapped). Same as starting the process with
/// `MALLOC_MMAP_THRESHOLD_`, `MALLOC_TOP_PAD_`, `MALLOC_TRIM_THRESHOLD_` set; settings
/// given in the environment win.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::os::raw::c_int;
        extern "C" {
            fn mallopt(param: c_int, value: c_int) -> c_int;
        }
        const M_TRIM_THRESHOLD: c_int = -1;
        const M_TOP_PAD: c_int = -2;
        const M_MMAP_THRESHOLD: c_int = -3;
        let settings = [
            (M_TRIM_THRESHOLD, "MALLOC_TRIM_THRESHOLD_", TRIM_THRESHOLD),
            (M_TOP_PAD, "MALLOC_TOP_PAD_", TOP_PAD),
            (M_MMAP_THRESHOLD, "MALLOC_MMAP_THRESHOLD_", MMAP_THRESHOLD),
        ];
        for (param, env, value) in settings {
            if std::env::var_os(env).is_some() {
                continue;
            }
            let value = c_int::try_from(value).unwrap_or(c_int::MAX);
            // SAFETY: `mallopt` only changes malloc parameters; it takes the arena lock
            // itself and is safe to call at any time.
            unsafe {
                mallopt(param, value);
            }
        }
    }
}

/// Returns the free memory of every malloc heap to the OS (glibc `malloc_trim(0)`); a
/// no-op elsewhere. With [`tune_allocator`]'s settings freed blocks stay in the process for
/// reuse, which is what the next op or model wants; call this where memory should really go
/// back (after unloading a model, when the queue is idle). Returns whether memory was
/// released.
pub fn release_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> std::os::raw::c_int;
        }
        // SAFETY: `malloc_trim` only walks malloc's own heaps under their locks.
        unsafe { malloc_trim(0) != 0 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn tuning_is_callable_twice() {
        super::tune_allocator();
        super::tune_allocator();
        let v = vec![1u8; 40 << 20];
        assert_eq!(v[123], 1);
        drop(v);
        super::release_memory();
    }
}
