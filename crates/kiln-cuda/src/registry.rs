//! The NVRTC kernel registry. Each op family's `.cu` source (plus the shared
//! headers in `kernels/`) is compiled once per process at first use, for the
//! device's architecture, to CUBIN, and cached on disk under
//! `$KILN_CACHE/cuda` (default `~/.cache/kiln/cuda`), keyed by a hash of the
//! source, the options, the architecture and the NVRTC version.
//! `KILN_DUMP_PTX=DIR` also writes each family's PTX to DIR.
//!
//! A family may also be compiled as a [`Variant`]: its source with a prelude
//! of `#define`s (the MLX kernels, one module per weight format, see
//! `mlx.rs`). Variants are modules of their own, compiled on first use;
//! several may compile at once (the lock is not held while NVRTC runs).

use crate::kernels::{HEADERS, INCLUDE_MARKER};
use crate::{CudaError, Result};
use cudarc::driver::{CudaContext, CudaFunction, CudaModule};
use cudarc::nvrtc::{result as nvrtc, sys as nvsys, Ptx};
use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// A family's source compiled with `defines` put before it.
#[derive(Clone, Copy, Debug)]
pub struct Variant<'a> {
    /// Short name for cache files, error messages and `KILN_DUMP_PTX`
    /// (e.g. `mlx_q4_g64_bf16`).
    pub label: &'a str,
    /// `#define` lines (each ending in a newline) put before the source.
    pub defines: &'a str,
}

/// Compiled modules by family.
pub struct Registry {
    arch: String,
    modules: Mutex<HashMap<&'static str, Arc<CudaModule>>>,
    /// Variant modules by family and defines.
    variants: Mutex<HashMap<(&'static str, String), Arc<CudaModule>>>,
    /// Functions already looked up, so a launch costs one hash lookup instead
    /// of a driver call (`cuModuleGetFunction`).
    functions: Mutex<HashMap<(&'static str, &'static str), CudaFunction>>,
}

/// FNV-1a 64: a stable hash for cache keys (std's hasher is not stable across releases).
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for &b in *p {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn cache_dir() -> PathBuf {
    let base = std::env::var_os("KILN_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("kiln")))
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache")
                .join("kiln")
        });
    base.join("cuda")
}

/// The NVRTC version as (major, minor).
pub fn nvrtc_version() -> Result<(i32, i32)> {
    let (mut a, mut b) = (0, 0);
    // SAFETY: plain out-parameters; the library was probed by the caller.
    let r = unsafe { nvsys::nvrtcVersion(&mut a, &mut b) };
    r.result()
        .map_err(|e| CudaError::driver("nvrtc version", e))?;
    Ok((a, b))
}

/// Expand `#include "x.cuh"` lines of kiln's own headers, so a source compiles
/// as one self-contained string (NVRTC then needs no file-system headers
/// except the toolkit's).
pub fn expand_source(src: &str) -> String {
    let mut out = String::with_capacity(src.len() * 2);
    for line in src.lines() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix(INCLUDE_MARKER) {
            let name = rest.trim().trim_matches('"');
            if let Some((_, body)) = HEADERS.iter().find(|(n, _)| *n == name) {
                out.push_str(&expand_source(body));
                out.push('\n');
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// NVRTC options for `arch` (e.g. `sm_90`).
pub fn compile_options(arch: &str) -> Vec<String> {
    let cuda_home = std::env::var("CUDA_HOME").unwrap_or_else(|_| "/usr/local/cuda".into());
    let mut opts = vec![
        format!("--gpu-architecture={arch}"),
        "--std=c++17".into(),
        "-lineinfo".into(),
        "--use_fast_math".into(),
        format!("--include-path={cuda_home}/include"),
    ];
    if let Some(extra) = std::env::var_os("KILN_NVRTC_INCLUDE") {
        opts.push(format!("--include-path={}", extra.to_string_lossy()));
    }
    opts
}

/// Compile `src` for `arch`; returns (CUBIN, PTX). Errors carry the log.
pub fn compile(source_name: &str, src: &str, arch: &str) -> Result<(Vec<u8>, String)> {
    let full = expand_source(src);
    let options = compile_options(arch);
    let csrc = CString::new(full).map_err(|_| CudaError::Compile {
        source_name: source_name.into(),
        options: options.clone(),
        log: "source contains a NUL byte".into(),
    })?;
    let cname = CString::new(source_name).unwrap_or_default();
    let prog = nvrtc::create_program(&csrc, Some(&cname))
        .map_err(|e| CudaError::driver("nvrtc create", e))?;
    // SAFETY: `prog` is a live program; options are valid C strings.
    let compiled = unsafe { nvrtc::compile_program(prog, &options) };
    let result = (|| {
        if let Err(e) = compiled {
            // SAFETY: log query on a live program.
            let log = unsafe { nvrtc::get_program_log(prog) }
                .map(|v| {
                    // SAFETY: NVRTC returns a NUL-terminated log.
                    unsafe { CStr::from_ptr(v.as_ptr()) }
                        .to_string_lossy()
                        .into_owned()
                })
                .unwrap_or_else(|_| format!("{e:?}"));
            return Err(CudaError::Compile {
                source_name: source_name.into(),
                options: options.clone(),
                log: log.trim().replace('\n', " | "),
            });
        }
        let mut size = 0usize;
        // SAFETY: size query on a compiled program.
        let r = unsafe { nvsys::nvrtcGetCUBINSize(prog, &mut size) };
        r.result()
            .map_err(|e| CudaError::driver("nvrtc cubin size", e))?;
        let mut cubin = vec![0u8; size];
        // SAFETY: `cubin` has exactly the size NVRTC reported.
        let r = unsafe { nvsys::nvrtcGetCUBIN(prog, cubin.as_mut_ptr().cast()) };
        r.result()
            .map_err(|e| CudaError::driver("nvrtc cubin", e))?;
        // SAFETY: PTX query on a compiled program.
        let ptx = unsafe { nvrtc::get_ptx(prog) }
            .map(|v| {
                // SAFETY: NUL-terminated PTX text.
                unsafe { CStr::from_ptr(v.as_ptr()) }
                    .to_string_lossy()
                    .into_owned()
            })
            .map_err(|e| CudaError::driver("nvrtc ptx", e))?;
        Ok((cubin, ptx))
    })();
    // SAFETY: destroying the program we created, once.
    let _ = unsafe { nvrtc::destroy_program(prog) };
    result
}

impl Registry {
    pub fn new(arch: String) -> Registry {
        Registry {
            arch,
            modules: Mutex::new(HashMap::new()),
            variants: Mutex::new(HashMap::new()),
            functions: Mutex::new(HashMap::new()),
        }
    }

    pub fn arch(&self) -> &str {
        &self.arch
    }

    /// CUBIN for a family: from the disk cache, else compiled (and cached).
    pub fn cubin(&self, family: &'static str, src: &'static str) -> Result<Vec<u8>> {
        self.cubin_named(family, &format!("{family}.cu"), src)
    }

    /// CUBIN of `src` (named `source_name` in errors, `name` in the cache
    /// and the PTX dump): from the disk cache, else compiled (and cached).
    fn cubin_named(&self, name: &str, source_name: &str, src: &str) -> Result<Vec<u8>> {
        let (maj, min) = nvrtc_version()?;
        let full = expand_source(src);
        let opts = compile_options(&self.arch).join(" ");
        let key = fnv1a(&[
            full.as_bytes(),
            opts.as_bytes(),
            self.arch.as_bytes(),
            format!("{maj}.{min}").as_bytes(),
        ]);
        let path = cache_dir().join(format!("{name}-{}-{key:016x}.cubin", self.arch));
        let dump = std::env::var_os("KILN_DUMP_PTX");
        if dump.is_none() {
            if let Ok(bytes) = std::fs::read(&path) {
                return Ok(bytes);
            }
        }
        let (cubin, ptx) = compile(source_name, src, &self.arch)?;
        if let Some(dir) = dump {
            let dir = PathBuf::from(dir);
            let _ = std::fs::create_dir_all(&dir);
            let _ = std::fs::write(dir.join(format!("{name}.{}.ptx", self.arch)), ptx);
        }
        // The cache is an optimisation: failing to write it is not an error.
        if std::fs::create_dir_all(cache_dir()).is_ok() {
            let tmp = path.with_extension(format!("tmp{}", std::process::id()));
            if std::fs::write(&tmp, &cubin).is_ok() {
                let _ = std::fs::rename(&tmp, &path);
            }
        }
        Ok(cubin)
    }

    /// The module of `family` compiled as variant `v`: loaded (and compiled
    /// or read from the disk cache) on first use. NVRTC runs without the
    /// lock, so other variants can compile meanwhile; two threads racing
    /// for the same variant both compile it and the first module is kept.
    pub fn variant_module(
        &self,
        ctx: &Arc<CudaContext>,
        family: &'static str,
        src: &'static str,
        v: Variant<'_>,
    ) -> Result<Arc<CudaModule>> {
        let lock = || {
            self.variants
                .lock()
                .map_err(|_| CudaError::driver("registry", "lock poisoned"))
        };
        let key = (family, v.defines.to_string());
        if let Some(m) = lock()?.get(&key) {
            return Ok(m.clone());
        }
        let name = format!("{family}-{}", v.label);
        let source_name = format!("{family}.cu [{}]", v.label);
        let cubin = self.cubin_named(&name, &source_name, &format!("{}{src}", v.defines))?;
        let module = ctx
            .load_module(Ptx::from_binary(cubin))
            .map_err(|e| CudaError::driver("module load", e))?;
        Ok(lock()?.entry(key).or_insert(module).clone())
    }

    /// Look `name` up in the module of `family` compiled as variant `v`
    /// (see [`Registry::variant_module`]); callers keep the handle.
    pub fn variant_function(
        &self,
        ctx: &Arc<CudaContext>,
        family: &'static str,
        src: &'static str,
        v: Variant<'_>,
        name: &str,
    ) -> Result<CudaFunction> {
        let module = self.variant_module(ctx, family, src, v)?;
        module.load_function(name).map_err(|e| CudaError::Driver {
            op: "kernel lookup",
            msg: format!("{family}.cu [{}] has no kernel {name}: {e:?}", v.label),
        })
    }

    /// Load (once) the family's module and return the named function.
    pub fn function(
        &self,
        ctx: &Arc<CudaContext>,
        family: &'static str,
        src: &'static str,
        name: &'static str,
    ) -> Result<CudaFunction> {
        let key = (family, name);
        if let Some(f) = self
            .functions
            .lock()
            .map_err(|_| CudaError::driver("registry", "lock poisoned"))?
            .get(&key)
        {
            return Ok(f.clone());
        }
        let f = self.function_uncached(ctx, family, src, name)?;
        self.functions
            .lock()
            .map_err(|_| CudaError::driver("registry", "lock poisoned"))?
            .insert(key, f.clone());
        Ok(f)
    }

    /// Load (once) the family's module and look `name` up in it.
    pub fn function_uncached(
        &self,
        ctx: &Arc<CudaContext>,
        family: &'static str,
        src: &'static str,
        name: &str,
    ) -> Result<CudaFunction> {
        let module = {
            let mut m = self
                .modules
                .lock()
                .map_err(|_| CudaError::driver("registry", "lock poisoned"))?;
            match m.get(family) {
                Some(module) => module.clone(),
                None => {
                    let cubin = self.cubin(family, src)?;
                    let module = ctx
                        .load_module(Ptx::from_binary(cubin))
                        .map_err(|e| CudaError::driver("module load", e))?;
                    m.insert(family, module.clone());
                    module
                }
            }
        };
        module.load_function(name).map_err(|e| CudaError::Driver {
            op: "kernel lookup",
            msg: format!("{family}.cu has no kernel {name}: {e:?}"),
        })
    }
}
