//! Process-wide settings for flmm's CPU work, made once at the start of `main` by [`tune_process`]:
//! the `flmm` binary and every benchmark call it, so benchmarks measure what the binary runs.
//!
//! - candle runs its element-wise ops on a pool of its own whose workers spin up to 25 000 times
//!   waiting for the next op, while its GEMMs and flmm's fused ops run on rayon's pool. With as many
//!   threads per pool as cores, a spinning worker of one pool holds a core the other pool's work is
//!   waiting for. Letting candle's workers sleep after 100 spins, measured on this 2-core machine with
//!   the release binary: head training on the toy world (`flmm train`, U-Net + SAM refiner) 3.5–3.9 →
//!   5.9–6.6 samples/s, toy VLM pretraining 7.5–7.6 → 10.0–10.4 samples/s (each pair in both orders).
//! - A training step allocates and frees tens of megabytes of activations and gradients. glibc's
//!   malloc maps every block above its (adaptive) threshold fresh from the kernel and returns freed
//!   memory at the top of the heap, so each step pays a page fault per 4 KiB of them again (measured
//!   here: swapping the channels of a 9.4 MB weight took 6.0 ms with fresh pages, 3.0 ms with reused
//!   ones; the U-Net bench step 0.88× the time). [`tune_process`] keeps blocks up to
//!   [`MMAP_THRESHOLD`] on the heap and freed memory with the process up to [`TRIM_THRESHOLD`], so the
//!   next step reuses the pages: the resident size stays at the peak of one step instead of falling
//!   between steps.
//!
//! A setting the user made in the environment (`CANDLE_BARRIER_POOL_SPIN_LIMIT`, glibc's
//! `GLIBC_TUNABLES` or `MALLOC_*_` variables) is left as it is.

/// The environment variable candle reads once, when its pool starts.
const SPIN_LIMIT_VAR: &str = "CANDLE_BARRIER_POOL_SPIN_LIMIT";

/// Spins before one of candle's idle workers sleeps, unless the user chose otherwise.
const SPIN_LIMIT: &str = "100";

/// Blocks up to this size (32 MiB, glibc's largest allowed) come from the heap, not from fresh maps.
pub const MMAP_THRESHOLD: usize = 32 << 20;

/// Free memory at the top of the heap up to this size (1 GiB) stays with the process.
pub const TRIM_THRESHOLD: usize = 1 << 30;

/// Applies every setting above. Call it at the start of `main`, before the first tensor op and before
/// other threads exist.
pub fn tune_process() {
    if std::env::var_os(SPIN_LIMIT_VAR).is_none() {
        std::env::set_var(SPIN_LIMIT_VAR, SPIN_LIMIT);
    }
    keep_freed_memory();
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep_freed_memory() {
    let tuned_by_user = std::env::vars_os().any(|(k, v)| {
        let (k, v) = (k.to_string_lossy(), v.to_string_lossy());
        (k == "GLIBC_TUNABLES" && v.contains("malloc")) || (k.starts_with("MALLOC_") && k.ends_with('_'))
    });
    if tuned_by_user {
        return;
    }
    // SAFETY: mallopt only changes allocator parameters; called before other threads exist.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as libc::c_int);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD as libc::c_int);
    }
}

/// Other allocators keep their own policy.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_freed_memory() {}
