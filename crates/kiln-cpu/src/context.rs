//! The CPU execution context: a rayon pool sized by the user (`-t`) and the
//! SIMD features detected once at start-up.

use kiln_core::{Error, Result};

/// SIMD features found at run time.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuFeatures {
    pub avx2: bool,
    pub fma: bool,
    pub f16c: bool,
    /// AVX-512 F + BW + VNNI (the packed mat-vec, `quant_dot::packed`);
    /// `KILN_CPU_PACK=0` turns it off.
    pub avx512_vnni: bool,
}

impl CpuFeatures {
    /// Detect the running CPU's features. `KILN_NO_SIMD=1` forces the scalar paths.
    pub fn detect() -> Self {
        if std::env::var_os("KILN_NO_SIMD").is_some_and(|v| v == "1") {
            return CpuFeatures::default();
        }
        #[cfg(target_arch = "x86_64")]
        {
            CpuFeatures {
                avx2: is_x86_feature_detected!("avx2"),
                fma: is_x86_feature_detected!("fma"),
                f16c: is_x86_feature_detected!("f16c"),
                avx512_vnni: is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512bw")
                    && is_x86_feature_detected!("avx512vnni")
                    && std::env::var_os("KILN_CPU_PACK").is_none_or(|v| v != "0"),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            CpuFeatures::default()
        }
    }

    /// AVX2 + FMA (+F16C) — the x86 fast path kiln uses.
    pub fn has_avx2_fma(&self) -> bool {
        self.avx2 && self.fma && self.f16c
    }
}

/// Thread pool + features; one per `Stream` on the CPU.
pub struct CpuContext {
    pool: rayon::ThreadPool,
    features: CpuFeatures,
}

impl CpuContext {
    /// A context with `threads` workers (0 = number of available cores).
    pub fn new(threads: usize) -> Result<Self> {
        Self::with_features(threads, CpuFeatures::detect())
    }

    /// A context with explicit features (tests use this to force the scalar path).
    pub fn with_features(threads: usize, features: CpuFeatures) -> Result<Self> {
        let n = if threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            threads
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .map_err(|e| Error::invalid("cpu", format!("cannot start {n} threads: {e}")))?;
        Ok(CpuContext { pool, features })
    }

    pub fn pool(&self) -> &rayon::ThreadPool {
        &self.pool
    }

    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    pub fn features(&self) -> CpuFeatures {
        self.features
    }
}
