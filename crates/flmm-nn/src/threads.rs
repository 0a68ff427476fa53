//! How long candle's CPU worker threads spin before they sleep.
//!
//! candle runs its element-wise ops on a pool of its own whose workers spin up to 25 000 times waiting for
//! the next op, while its GEMMs and flmm's fused ops run on rayon's pool. With as many threads per pool as
//! cores, a spinning worker of one pool holds a core the other pool's work is waiting for. Letting candle's
//! workers sleep after 100 spins, measured on this 2-core machine with the release binary: head training on
//! the toy world (`flmm train`, U-Net + SAM refiner) 3.5–3.9 → 5.9–6.6 samples/s, toy VLM pretraining
//! 7.5–7.6 → 10.0–10.4 samples/s (each pair measured in both orders).

/// The environment variable candle reads once, when its pool starts.
const SPIN_LIMIT_VAR: &str = "CANDLE_BARRIER_POOL_SPIN_LIMIT";

/// Spins before one of candle's idle workers sleeps, unless the user chose otherwise.
const SPIN_LIMIT: &str = "100";

/// Sets candle's worker spin limit to [`SPIN_LIMIT`] unless `CANDLE_BARRIER_POOL_SPIN_LIMIT` is already set.
/// Call it at the start of `main`, before the first tensor op and before other threads exist.
pub fn limit_worker_spinning() {
    if std::env::var_os(SPIN_LIMIT_VAR).is_none() {
        std::env::set_var(SPIN_LIMIT_VAR, SPIN_LIMIT);
    }
}
