//! Every kernel family compiles with NVRTC (for sm_90 and sm_80). Needs only
//! libnvrtc, not a GPU: CI gets it from PyPI (scripts/test.sh). Skipped, with
//! the reason, where libnvrtc cannot be loaded. `KILN_COMPILE_FAMILIES=a,b`
//! compiles only those families (for iterating on one kernel).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kiln_cuda::kernels::FAMILIES;
use kiln_cuda::registry::compile;

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
