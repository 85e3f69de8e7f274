//! The CUDA C++ sources, embedded in the binary. One `.cu` per op family,
//! shared `.cuh` headers expanded by the registry before compiling.

/// Lines starting with this, naming one of [`HEADERS`], are replaced by it.
pub const INCLUDE_MARKER: &str = "#include";

/// kiln's own headers, by the name the sources include them with.
pub const HEADERS: &[(&str, &str)] = &[
    ("common.cuh", include_str!("../kernels/common.cuh")),
    ("matvec.cuh", include_str!("../kernels/matvec.cuh")),
    ("decode_kq.cuh", include_str!("../kernels/decode_kq.cuh")),
    ("iq23_grids.cuh", include_str!("../kernels/iq23_grids.cuh")),
    ("decode_iq.cuh", include_str!("../kernels/decode_iq.cuh")),
    (
        "matvec_staged.cuh",
        include_str!("../kernels/matvec_staged.cuh"),
    ),
    (
        "matvec_tile.cuh",
        include_str!("../kernels/matvec_tile.cuh"),
    ),
    ("mlx.cuh", include_str!("../kernels/mlx.cuh")),
    (
        "attention_kv.cuh",
        include_str!("../kernels/attention_kv.cuh"),
    ),
    (
        "attention_mma.cuh",
        include_str!("../kernels/attention_mma.cuh"),
    ),
    (
        "attention_mma2.cuh",
        include_str!("../kernels/attention_mma2.cuh"),
    ),
    (
        "attention_dec.cuh",
        include_str!("../kernels/attention_dec.cuh"),
    ),
    ("norm_rope.cuh", include_str!("../kernels/norm_rope.cuh")),
];

pub const ADD: &str = include_str!("../kernels/add.cu");
pub const ADD_ROWS: &str = include_str!("../kernels/add_rows.cu");
pub const MATMUL: &str = include_str!("../kernels/matmul.cu");
pub const MATVEC_FUSED: &str = include_str!("../kernels/matvec_fused.cu");
pub const ATTENTION: &str = include_str!("../kernels/attention.cu");
pub const CAST: &str = include_str!("../kernels/cast.cu");

pub const ARGMAX: &str = include_str!("../kernels/argmax.cu");
pub const COPY_ROWS: &str = include_str!("../kernels/copy_rows.cu");
pub const EMBEDDING: &str = include_str!("../kernels/embedding.cu");
pub const GELU_MUL: &str = include_str!("../kernels/gelu_mul.cu");
pub const RMS_NORM: &str = include_str!("../kernels/rms_norm.cu");
pub const ROPE: &str = include_str!("../kernels/rope.cu");
pub const ROPE_MULTI: &str = include_str!("../kernels/rope_multi.cu");
pub const SAMPLE: &str = include_str!("../kernels/sample.cu");
pub const SCALE: &str = include_str!("../kernels/scale.cu");
pub const SIGMOID_MUL: &str = include_str!("../kernels/sigmoid_mul.cu");
pub const SILU_MUL: &str = include_str!("../kernels/silu_mul.cu");
pub const SOFTMAX: &str = include_str!("../kernels/softmax.cu");
pub const LAYER_NORM: &str = include_str!("../kernels/layer_norm.cu");
pub const L2_NORM: &str = include_str!("../kernels/l2_norm.cu");
pub const SOFTCAP: &str = include_str!("../kernels/softcap.cu");
pub const MOE_ROUTE: &str = include_str!("../kernels/moe_route.cu");
pub const MATMUL_ID: &str = include_str!("../kernels/matmul_id.cu");
pub const MOE_COMBINE: &str = include_str!("../kernels/moe_combine.cu");
pub const MUL: &str = include_str!("../kernels/mul.cu");
pub const NORM_ROPE: &str = include_str!("../kernels/norm_rope.cu");
pub const QK_NORM_ROPE_KV: &str = include_str!("../kernels/qk_norm_rope_kv.cu");

/// Every family, for the test that compiles all kernels and for warm-up.
/// (matmul, matmul_id and embedding are also compiled per MLX format, as
/// variants: `mlx::FAMILIES`.)
pub const FAMILIES: &[(&str, &str)] = &[
    ("argmax", ARGMAX),
    ("copy_rows", COPY_ROWS),
    ("embedding", EMBEDDING),
    ("gelu_mul", GELU_MUL),
    ("rms_norm", RMS_NORM),
    ("rope", ROPE),
    ("rope_multi", ROPE_MULTI),
    ("sample", SAMPLE),
    ("scale", SCALE),
    ("sigmoid_mul", SIGMOID_MUL),
    ("silu_mul", SILU_MUL),
    ("softmax", SOFTMAX),
    ("layer_norm", LAYER_NORM),
    ("l2_norm", L2_NORM),
    ("softcap", SOFTCAP),
    ("add", ADD),
    ("add_rows", ADD_ROWS),
    ("mul", MUL),
    ("cast", CAST),
    ("attention", ATTENTION),
    ("matmul", MATMUL),
    ("matvec_fused", MATVEC_FUSED),
    ("moe_route", MOE_ROUTE),
    ("matmul_id", MATMUL_ID),
    ("moe_combine", MOE_COMBINE),
    ("norm_rope", NORM_ROPE),
    ("qk_norm_rope_kv", QK_NORM_ROPE_KV),
];
