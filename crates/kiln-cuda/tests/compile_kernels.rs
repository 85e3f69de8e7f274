//! Every kernel family compiles with NVRTC (for sm_90 and sm_80). Needs only
//! libnvrtc, not a GPU: CI gets it from PyPI (scripts/test.sh). Skipped, with
//! the reason, where libnvrtc cannot be loaded. `KILN_COMPILE_FAMILIES=a,b`
//! compiles only those families (for iterating on one kernel).
//!
//! The MLX variants (one module per format and family, `kiln_cuda::mlx`)
//! compile for the six `mlx_cover` formats, which between them have every
//! bits value, group size and scale dtype, for sm_90, and one of them for
//! sm_80 too; `KILN_COMPILE_MLX=all` compiles all 54 formats for sm_90
//! (about 4 s per matmul variant on a 2-core machine; in parallel).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kiln_core::DType;
use kiln_cuda::kernels::FAMILIES;
use kiln_cuda::registry::compile;
use kiln_testkit::cases::matmul_mlx::{mlx_cover, mlx_wtypes};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Whether a test of `family` does not run here: no libnvrtc (said once per
/// test), or `KILN_COMPILE_FAMILIES` names other families.
fn skipped(family: &str) -> bool {
    // SAFETY: only tries to dlopen libnvrtc.
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        eprintln!("SKIPPED: libnvrtc not found (scripts/test.sh installs it from PyPI)");
        return true;
    }
    std::env::var("KILN_COMPILE_FAMILIES").is_ok_and(|o| !o.split(',').any(|x| x == family))
}

#[test]
fn every_kernel_family_compiles() {
    // SAFETY: only tries to dlopen libnvrtc.
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        eprintln!("SKIPPED: libnvrtc not found (scripts/test.sh installs it from PyPI)");
        return;
    }
    let only = std::env::var("KILN_COMPILE_FAMILIES").ok();
    let wanted = |f: &str| only.as_ref().is_none_or(|o| o.split(',').any(|x| x == f));
    let mut failures = Vec::new();
    let mut compiled = 0;
    for arch in ["sm_90", "sm_80"] {
        for (family, src) in FAMILIES.iter().filter(|(f, _)| wanted(f)) {
            match compile(&format!("{family}.cu"), src, arch) {
                Ok((cubin, ptx)) => {
                    assert!(!cubin.is_empty(), "{family}: empty CUBIN");
                    assert!(ptx.contains(".entry"), "{family}: PTX has no entry point");
                    compiled += 1;
                }
                Err(e) => failures.push(format!("{arch} {family}: {e}")),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    eprintln!(
        "compiled {} kernel families for sm_90 and sm_80",
        compiled / 2
    );
}

/// The tensor-core attention prefill (attention_mma.cuh and
/// attention_mma2.cuh, included by attention.cu) is really there for sm_80
/// and sm_90: v1's and v2's entry points, with bf16 mma and ldmatrix (an
/// sm_80+ guard gone wrong would compile them to empty bodies), and v2's
/// 16-bit-cache entries with cp.async and the mma of their type.
#[test]
fn attention_mma_uses_tensor_cores() {
    // SAFETY: only tries to dlopen libnvrtc.
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        eprintln!("SKIPPED: libnvrtc not found (scripts/test.sh installs it from PyPI)");
        return;
    }
    for arch in ["sm_90", "sm_80"] {
        let (_, ptx) = compile("attention.cu", kiln_cuda::kernels::ATTENTION, arch).unwrap();
        for (d, v) in [(64, ""), (128, ""), (64, "2"), (128, "2")] {
            let entry = format!(".entry attention_mma{v}_d{d}_f32(");
            let body = ptx
                .split(&entry)
                .nth(1)
                .unwrap_or_else(|| panic!("{arch}: no {entry}"));
            let body = body.split(".entry").next().unwrap_or(body);
            for needle in [
                "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32",
                "ldmatrix.sync.aligned.m8n8.x4.shared.b16",
                "ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16",
                "cvt.rn.bf16x2.f32",
            ] {
                assert!(body.contains(needle), "{arch} d{d}: no {needle}");
            }
        }
        // v2 with 16-bit caches copies K/V tiles by cp.async (16 bytes, L2
        // only) in commit groups, waits on them, and multiplies them as
        // stored: bf16 operands for bf16 caches, f16 ones for f16 caches.
        for (kv, op) in [
            (kiln_core::KvType::BF16, "bf16"),
            (kiln_core::KvType::F16, "f16"),
        ] {
            let var = kiln_cuda::attention::kv_variant(kv).unwrap();
            let src = format!("{}{}", var.defines, kiln_cuda::kernels::ATTENTION);
            let (_, ptx) = compile("attention.cu", &src, arch).unwrap();
            for d in [64, 128] {
                let entry = format!(".entry attention_mma2_d{d}_{kv}(");
                let body = ptx
                    .split(&entry)
                    .nth(1)
                    .unwrap_or_else(|| panic!("{arch}: no {entry}"));
                let body = body.split(".entry").next().unwrap_or(body);
                let mma = format!("mma.sync.aligned.m16n8k16.row.col.f32.{op}.{op}.f32");
                for needle in [
                    "cp.async.cg.shared.global",
                    "cp.async.commit_group",
                    "cp.async.wait_group",
                    &mma,
                    "ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16",
                ] {
                    assert!(body.contains(needle), "{arch} d{d} {kv}: no {needle}");
                }
            }
        }
    }
}

/// Run `check` over `work` on every core (NVRTC compiles are slow: the
/// variant tests compile dozens of modules) and gather its failure lines.
fn compile_in_parallel<T: Sync>(
    work: &[T],
    check: impl Fn(&T) -> Vec<String> + Sync,
) -> Vec<String> {
    let next = AtomicUsize::new(0);
    let failures = Mutex::new(Vec::new());
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    std::thread::scope(|s| {
        for _ in 0..threads.min(work.len()) {
            s.spawn(|| {
                while let Some(w) = work.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let msg = check(w);
                    failures.lock().unwrap().extend(msg);
                }
            });
        }
    });
    failures.into_inner().unwrap()
}

/// matvec_fused compiles one module per weight format (`KILN_MVF_W`); the
/// family loop above builds only the default (Q4_1). Here: every other
/// format's variant for sm_90, in parallel, each with its 8 entry points.
#[test]
fn matvec_fused_variants_compile() {
    if skipped("matvec_fused") {
        return;
    }
    let work: Vec<DType> = kiln_cuda::matvec_fused::fused_wtypes()
        .iter()
        .copied()
        .filter(|&t| t != DType::Q4_1)
        .collect();
    let failures = compile_in_parallel(&work, |&t| {
        let name = format!("matvec_fused.cu [{t}]");
        let full = format!(
            "{}{}",
            kiln_cuda::matvec_fused::variant_defines(t),
            kiln_cuda::kernels::MATVEC_FUSED
        );
        match compile(&name, &full, "sm_90") {
            Ok((cubin, ptx)) => (1..=8)
                .map(|m| format!("matvec_fused_m{m}"))
                .filter(|e| cubin.is_empty() || !ptx.contains(&format!(".entry {e}(")))
                .map(|e| format!("{name}: no entry {e}"))
                .collect(),
            Err(e) => vec![format!("{name}: {e}")],
        }
    });
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The entry points a family's MLX variant must hold.
fn mlx_entries(family: &str, tag: &str) -> Vec<String> {
    match family {
        "matmul" => (1..=8)
            .map(|m| format!("mul_mv_mlx_{tag}_f32_m{m}"))
            .chain([format!("dequant_mlx_{tag}_f16")])
            .collect(),
        "matmul_id" => vec![
            format!("mul_mv_id_mlx_{tag}_f32"),
            format!("mul_mm_id_mlx_{tag}_f32"),
        ],
        _ => vec![format!("embedding_mlx_{tag}_f32")],
    }
}

#[test]
fn mlx_variants_compile() {
    // SAFETY: only tries to dlopen libnvrtc.
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        eprintln!("SKIPPED: libnvrtc not found (scripts/test.sh installs it from PyPI)");
        return;
    }
    let only = std::env::var("KILN_COMPILE_FAMILIES").ok();
    let wanted = |f: &str| only.as_ref().is_none_or(|o| o.split(',').any(|x| x == f));
    let all = std::env::var("KILN_COMPILE_MLX").is_ok_and(|v| v == "all");
    let formats = if all { mlx_wtypes() } else { mlx_cover() };
    let mut work = Vec::new();
    for (family, src) in kiln_cuda::mlx::FAMILIES.iter().filter(|(f, _)| wanted(f)) {
        for (i, &t) in formats.iter().enumerate() {
            let DType::Mlx(f) = t else { continue };
            work.push(("sm_90", *family, *src, f));
            if i == 0 {
                work.push(("sm_80", *family, *src, f));
            }
        }
    }
    let failures = compile_in_parallel(&work, |&(arch, family, src, f)| {
        let name = format!("{family}.cu [{}]", kiln_cuda::mlx::label(f));
        let full = format!("{}{src}", kiln_cuda::mlx::defines(f));
        match compile(&name, &full, arch) {
            Ok((cubin, ptx)) => mlx_entries(family, &kiln_cuda::mlx::tag(f))
                .into_iter()
                .filter(|e| cubin.is_empty() || !ptx.contains(&format!(".entry {e}(")))
                .map(|e| format!("{arch} {name}: no entry {e}"))
                .collect(),
            Err(e) => vec![format!("{arch} {name}: {e}")],
        }
    });
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    eprintln!(
        "compiled {} MLX variants ({} formats)",
        work.len(),
        formats.len()
    );
}

/// attention.cu's f16 and bf16 cache variants (`attention::kv_variant`)
/// compile for sm_90 and sm_80 and hold every entry point the launcher
/// looks up; so does the f32 family module.
#[test]
fn attention_kv_variants_compile() {
    use kiln_core::KvType;
    if skipped("attention") {
        return;
    }
    let src = kiln_cuda::kernels::ATTENTION;
    let mut failures = Vec::new();
    for kv in KvType::ALL {
        let defines = kiln_cuda::attention::kv_variant(kv).map_or("", |v| v.defines);
        // f32: the family module (sm_90 only here; the family test covers sm_80).
        let archs: &[&str] = if kv == KvType::F32 {
            &["sm_90"]
        } else {
            &["sm_90", "sm_80"]
        };
        for arch in archs {
            let name = format!("attention.cu [{kv}]");
            match compile(&name, &format!("{defines}{src}"), arch) {
                Ok((_, ptx)) => failures.extend(
                    kiln_cuda::attention::kernel_names(kv)
                        .into_iter()
                        .filter(|e| !ptx.contains(&format!(".entry {e}(")))
                        .map(|e| format!("{arch} {name}: no entry {e}")),
                ),
                Err(e) => failures.push(format!("{arch} {name}: {e}")),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// matmul_id.cu holds the tile entry points the launcher looks up by name
/// (`matmul_id::tile_kernel_names`, float and int8 activations) for every
/// format that has them: a missing one would fail only on a GPU.
#[test]
fn matmul_id_tile_entries_exist() {
    if skipped("matmul_id") {
        return;
    }
    let (_, ptx) = compile("matmul_id.cu", kiln_cuda::kernels::MATMUL_ID, "sm_90").unwrap();
    let mut names = Vec::new();
    for t in DType::ALL {
        for q8 in [false, true] {
            if let Some((mv, sw)) = kiln_cuda::matmul_id::tile_kernel_names(t, q8) {
                names.extend([mv, sw]);
            }
        }
    }
    assert!(names.len() >= 2 * (12 + 6), "{names:?}");
    let missing: Vec<_> = names
        .iter()
        .filter(|e| !ptx.contains(&format!(".entry {e}(")))
        .collect();
    assert!(missing.is_empty(), "matmul_id.cu: no entry {missing:?}");
}

#[test]
fn compile_errors_carry_the_log_and_the_name() {
    // SAFETY: only tries to dlopen libnvrtc.
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        eprintln!("SKIPPED: libnvrtc not found");
        return;
    }
    let err = compile(
        "broken.cu",
        "extern \"C\" __global__ void k() { this is not C++ }",
        "sm_90",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("broken.cu"), "{err}");
    assert!(err.contains("error"), "{err}");
    assert!(!err.contains('\n'), "one line: {err}");
}

/// cast.cu has the entry point `select_cast` names for every direction, and
/// neither cast.cu nor mul.cu leaves the float work to instructions that
/// would break bit-exactness under --use_fast_math: no cvt to f16 / bf16
/// (canonical NaN), no flush-to-zero multiply.
#[test]
fn cast_and_mul_entries_and_exact_instructions() {
    use kiln_core::ops::cast::{CastParams, CAST_DTYPES};
    // SAFETY: only tries to dlopen libnvrtc.
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        eprintln!("SKIPPED: libnvrtc not found (scripts/test.sh installs it from PyPI)");
        return;
    }
    let (_, ptx) = compile("cast.cu", kiln_cuda::kernels::CAST, "sm_90").unwrap();
    for src in CAST_DTYPES {
        for dst in CAST_DTYPES {
            let k = kiln_cuda::cast::select_cast(&CastParams { n: 1, src, dst }).unwrap();
            let entry = format!(".entry {}(", k.name());
            assert!(
                ptx.contains(&entry),
                "cast.cu: no {entry} for {src} -> {dst}"
            );
        }
    }
    assert!(!ptx.contains("cvt.rn.f16") && !ptx.contains("cvt.rn.bf16"));
    let (_, ptx) = compile("mul.cu", kiln_cuda::kernels::MUL, "sm_90").unwrap();
    assert!(ptx.contains("mul.rn.f32"), "mul.cu: no mul.rn.f32");
    assert!(!ptx.contains(".ftz.f32"), "mul.cu flushes subnormals");
}

/// embedding.cu has the entry point `select_embedding` names for every GGML
/// format (a missing one would fail only at its first launch, on a GPU); no
/// entry fuses a multiply and an add (the reference rounds both, and the
/// testkit table wants bit-exact rows); Q8_K's f32-scale multiply keeps
/// subnormals as the reference (mul.rn.f32, not the flush-to-zero multiply
/// --use_fast_math makes of `*`).
#[test]
fn embedding_entries_for_every_ggml_format() {
    use kiln_core::ops::embedding::EmbeddingParams;
    if skipped("embedding") {
        return;
    }
    let (_, ptx) = compile("embedding.cu", kiln_cuda::kernels::EMBEDDING, "sm_90").unwrap();
    for dtype in DType::ALL {
        let p = EmbeddingParams {
            n_vocab: 1,
            dim: dtype.block_size(),
            dtype,
        };
        let name = kiln_cuda::embedding::select_embedding(&p).unwrap().name();
        assert!(
            ptx.contains(&format!(".entry {name}(")),
            "embedding.cu: no entry {name} for {dtype}"
        );
    }
    for body in ptx.split(".entry ").skip(1) {
        let name = body.split('(').next().unwrap_or(body);
        assert!(!body.contains("fma.rn"), "{name} fuses a multiply-add");
    }
    let q8k = ptx.split(".entry embedding_q8_k_f32(").nth(1).unwrap();
    let q8k = q8k.split(".entry").next().unwrap_or(q8k);
    assert!(
        q8k.contains("mul.rn.f32"),
        "embedding_q8_k_f32: no mul.rn.f32"
    );
    assert!(
        !q8k.contains(".ftz.f32"),
        "embedding_q8_k_f32 flushes subnormals"
    );
}

/// Registers and spills of the attention decode and tensor-core prefill
/// kernels for sm_90, from ptxas (`--ptxas-options=-v` through NVRTC),
/// printed for every cache type: the lane-group kernels (`attention_decg_d*`)
/// and the warp decode kernels they replace, the prefill v1
/// (`attention_mma_d*`) and v2 (`attention_mma2_d*`). The lane-group kernels
/// must not spill (their q, acc and two K/V rows live in registers) and must
/// fit the 128 registers per thread that let `attention::DECG_BLOCKS_PER_SM`
/// blocks share an SM; the prefill kernels must not spill.
/// Run with `--nocapture` to see the table.
#[test]
fn attention_decode_registers() {
    use kiln_core::KvType;
    use kiln_cuda::registry::{compile_options, expand_source};
    use std::ffi::{CStr, CString};
    if skipped("attention") {
        return;
    }
    // The ptxas log of one cache type's module.
    let ptxas_log = |kv: KvType| -> String {
        let defines = kiln_cuda::attention::kv_variant(kv).map_or("", |v| v.defines);
        let src = expand_source(&format!("{defines}{}", kiln_cuda::kernels::ATTENTION));
        let mut opts = compile_options("sm_90");
        opts.push("--ptxas-options=-v".into());
        let csrc = CString::new(src).unwrap();
        let prog = cudarc::nvrtc::result::create_program(&csrc, Some(c"attention.cu")).unwrap();
        // SAFETY: a live program and valid options; the log is NUL-terminated.
        let log = unsafe {
            let ok = cudarc::nvrtc::result::compile_program(prog, &opts);
            let log = cudarc::nvrtc::result::get_program_log(prog).unwrap();
            let log = CStr::from_ptr(log.as_ptr()).to_string_lossy().into_owned();
            let _ = cudarc::nvrtc::result::destroy_program(prog);
            assert!(ok.is_ok(), "attention.cu [{kv}]: {log}");
            log
        };
        log
    };
    let logs: Vec<(KvType, String)> = std::thread::scope(|s| {
        let hs: Vec<_> = KvType::ALL
            .into_iter()
            .map(|kv| (kv, s.spawn(move || ptxas_log(kv))))
            .collect();
        hs.into_iter()
            .map(|(kv, h)| (kv, h.join().unwrap()))
            .collect()
    });
    let mut failures = Vec::new();
    for (kv, log) in &logs {
        // "Compiling entry function 'NAME' for 'sm_90'" is followed by
        // "N bytes stack frame, S bytes spill stores, L bytes spill loads"
        // and "Used R registers, ...".
        let mut entry: Option<String> = None;
        let (mut spill, mut stores) = (String::new(), None);
        for line in log.lines() {
            if let Some(rest) = line.split("Compiling entry function '").nth(1) {
                entry = rest.split('\'').next().map(str::to_owned);
                (spill, stores) = (String::new(), None);
            } else if line.contains(" bytes spill stores") {
                spill = line.split(". ").last().unwrap_or("").trim().to_owned();
                stores = number_before(line, " bytes spill stores");
            } else if line.contains("Used ") {
                let Some(name) = entry.take() else { continue };
                if !name.starts_with("attention_dec") && !name.starts_with("attention_mma") {
                    continue;
                }
                let regs = number_before(line, " registers").unwrap_or(usize::MAX);
                eprintln!("{name}: {regs} registers; {spill}");
                // The tensor-core prefill kernels (v1 and v2) hold their
                // S, O and Q fragments in registers: a spill would cost
                // local-memory traffic in the inner loop.
                if name.starts_with("attention_mma") && stores != Some(0) {
                    failures.push(format!("{name} ({kv}) spills: {spill}"));
                }
                if name.starts_with("attention_decg") {
                    if stores != Some(0) {
                        failures.push(format!("{name} ({kv}) spills: {spill}"));
                    }
                    if regs > 128 {
                        failures.push(format!("{name} ({kv}) uses {regs} registers"));
                    }
                }
            }
        }
    }
    let decg = logs
        .iter()
        .map(|(_, l)| l.matches("entry function 'attention_decg").count())
        .sum::<usize>();
    assert_eq!(
        decg,
        3 * 2 * kiln_cuda::attention::DECG_HEAD_DIMS.len(),
        "lane-group entries"
    );
    let mma2 = logs
        .iter()
        .map(|(_, l)| l.matches("entry function 'attention_mma2").count())
        .sum::<usize>();
    assert_eq!(
        mma2,
        3 * kiln_cuda::attention::MMA_HEAD_DIMS.len(),
        "tensor-core v2 entries"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The number just before `marker` in `line` ("Used 96 registers" → 96).
fn number_before(line: &str, marker: &str) -> Option<usize> {
    line.split(marker).next()?.rsplit(' ').next()?.parse().ok()
}

/// qk_norm_rope_kv.cu has an entry point for every kernel its launcher can
/// select (both row sources, both pairings, every cache type), and
/// norm_rope.cu, which shares its per-head code (norm_rope.cuh), keeps its
/// four.
#[test]
fn qk_norm_rope_kv_has_every_entry_point() {
    // SAFETY: only tries to dlopen libnvrtc.
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        eprintln!("SKIPPED: libnvrtc not found (scripts/test.sh installs it from PyPI)");
        return;
    }
    use kiln_cuda::kernels::{NORM_ROPE, QK_NORM_ROPE_KV};
    use kiln_cuda::qk_norm_rope_kv::QkNormRopeKvKernel;
    let (_, ptx) = compile("qk_norm_rope_kv.cu", QK_NORM_ROPE_KV, "sm_90").unwrap();
    for k in QkNormRopeKvKernel::all() {
        assert!(
            ptx.contains(&format!(".entry {}(", k.name())),
            "{k:?}: {}",
            k.name()
        );
    }
    // PDL at entry (kiln_pdl_enter) in the Hopper build.
    assert!(ptx.contains("griddepcontrol.wait"));
    let (_, ptx) = compile("norm_rope.cu", NORM_ROPE, "sm_90").unwrap();
    for mode in ["normal", "neox", "normal_ff", "neox_ff"] {
        assert!(
            ptx.contains(&format!(".entry norm_rope_{mode}_f32(")),
            "{mode}"
        );
    }
}
