"""Kernel sources for the scripts/check-cuda-*.py host checkers: the pieces
of crates/kiln-cuda/kernels that compile as host C++ behind
cuda_host_shim.h (the checkers import this module from their own folder)."""
import pathlib

KERNELS = pathlib.Path(__file__).resolve().parent.parent / "crates/kiln-cuda/kernels"


def device_src(name: str) -> str:
    """A kernel file without its includes and pragmas."""
    src = (KERNELS / name).read_text()
    return "\n".join(l for l in src.splitlines() if not l.startswith(("#include", "#pragma once")))


def common_decls() -> str:
    """The block structs and QK defines of common.cuh (not its inline PTX)."""
    src = (KERNELS / "common.cuh").read_text()
    keep = ("struct block", "static_assert", "#define QK")
    return "\n".join(l for l in src.splitlines() if l.startswith(keep))


def matvec_src() -> str:
    """matvec.cuh from byte_f32 on (its kiln_f32_to_f16 uses inline PTX)."""
    src = (KERNELS / "matvec.cuh").read_text()
    defines = [l for l in src.splitlines() if l.startswith("#define MV_")]
    return "\n".join(defines) + "\n" + src[src.index("// Byte i of `bytes`") :]
