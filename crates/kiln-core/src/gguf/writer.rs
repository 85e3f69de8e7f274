//! [`GgufWriter`]: writes GGUF v2/v3 files (ggml `docs/gguf.md`) that the
//! kiln reader, llama.cpp and the `gguf` Python package can read.
//!
//! The writer checks what the reader would reject (duplicate keys and
//! tensor names, mixed-type or too-deep arrays, bad alignment, wrong data
//! length) so that everything it writes reads back identically.
//!
//! Tensor data is either held by the writer ([`GgufWriter::add_tensor`]) or
//! declared up front and streamed at write time
//! ([`GgufWriter::add_tensor_info`] + [`GgufWriter::write_file_with`]): the
//! header only needs each tensor's type and shape, so a converter can write a
//! model tensor by tensor without holding the whole output in memory.

use super::{
    align_up, tensor_n_bytes, Value, ALIGNMENT_KEY, DEFAULT_ALIGNMENT, GGUF_MAGIC, MAX_ARRAY_DEPTH,
};
use crate::{DType, Error, Result};
use std::borrow::Cow;
use std::collections::HashSet;
use std::io::Write;
use std::path::Path;

const OP: &str = "gguf writer";

/// The callback that supplies streamed tensor data: `(index, name)` of a
/// tensor declared with [`GgufWriter::add_tensor_info`] → its bytes.
pub type TensorDataFn<'f, 'd> = dyn FnMut(usize, &str) -> Result<Cow<'d, [u8]>> + 'f;

struct PendingTensor {
    name: String,
    dims: Vec<u64>,
    dtype: DType,
    n_bytes: u64,
    /// `None`: declared with [`GgufWriter::add_tensor_info`], data streamed.
    data: Option<Vec<u8>>,
}

/// Builds a GGUF file in memory and writes it out.
pub struct GgufWriter {
    version: u32,
    alignment: Option<u64>,
    kvs: Vec<(String, Value)>,
    tensors: Vec<PendingTensor>,
}

impl Default for GgufWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl GgufWriter {
    /// An empty v3 writer with the default alignment.
    pub fn new() -> Self {
        GgufWriter {
            version: 3,
            alignment: None,
            kvs: Vec::new(),
            tensors: Vec::new(),
        }
    }

    /// Set the format version (2 or 3; checked at write time).
    pub fn version(mut self, v: u32) -> Self {
        self.version = v;
        self
    }

    /// Set the data alignment (a nonzero power of two, checked at write
    /// time). Unless a `general.alignment` key was added, one is written.
    pub fn alignment(&mut self, a: u64) {
        self.alignment = Some(a);
    }

    /// Add a metadata pair (written in insertion order; duplicates are an
    /// error at write time).
    pub fn add_kv(&mut self, key: impl Into<String>, value: Value) {
        self.kvs.push((key.into(), value));
    }

    /// Add a tensor with GGUF-order `dims` (`ne[0]` first); `data` must hold
    /// exactly `row_bytes(ne[0]) * product(ne[1..])` bytes.
    pub fn add_tensor(
        &mut self,
        name: impl Into<String>,
        dims: Vec<u64>,
        dtype: DType,
        data: Vec<u8>,
    ) -> Result<()> {
        let name = name.into();
        let n_bytes = self.check_new_tensor(&name, &dims, dtype)?;
        if data.len() as u64 != n_bytes {
            return Err(Error::invalid(
                OP,
                format!(
                    "tensor '{name}' ({dtype}, dims {dims:?}) has {} data bytes, expected {n_bytes}",
                    data.len()
                ),
            ));
        }
        self.tensors.push(PendingTensor {
            name,
            dims,
            dtype,
            n_bytes,
            data: Some(data),
        });
        Ok(())
    }

    /// Declare a tensor whose data is supplied at write time by the callback
    /// of [`GgufWriter::write_to_with`] / [`GgufWriter::write_file_with`].
    /// Returns the byte count the callback must then supply.
    pub fn add_tensor_info(
        &mut self,
        name: impl Into<String>,
        dims: Vec<u64>,
        dtype: DType,
    ) -> Result<u64> {
        let name = name.into();
        let n_bytes = self.check_new_tensor(&name, &dims, dtype)?;
        self.tensors.push(PendingTensor {
            name,
            dims,
            dtype,
            n_bytes,
            data: None,
        });
        Ok(n_bytes)
    }

    /// Byte size of a new tensor; errors on bad dims or a duplicate name.
    fn check_new_tensor(&self, name: &str, dims: &[u64], dtype: DType) -> Result<u64> {
        let n_bytes = tensor_n_bytes(dims, dtype)
            .map_err(|e| Error::invalid(OP, format!("tensor '{name}': {e}")))?;
        if self.tensors.iter().any(|t| t.name == name) {
            return Err(Error::invalid(
                OP,
                format!("duplicate tensor name '{name}'"),
            ));
        }
        Ok(n_bytes)
    }

    /// The alignment to use and whether a `general.alignment` pair must be
    /// appended to the metadata.
    fn effective_alignment(&self) -> Result<(u64, bool)> {
        let from_kv = match self.kvs.iter().find(|(k, _)| k == ALIGNMENT_KEY) {
            None => None,
            Some((_, v)) => Some(v.as_u64().ok_or_else(|| {
                Error::invalid(
                    OP,
                    format!(
                        "key '{ALIGNMENT_KEY}' has type {}, expected u32",
                        v.type_name()
                    ),
                )
            })?),
        };
        let (a, append) = match (self.alignment, from_kv) {
            (Some(a), Some(k)) if a != k => {
                return Err(Error::invalid(
                    OP,
                    format!("alignment {a} differs from key '{ALIGNMENT_KEY}' = {k}"),
                ))
            }
            (_, Some(k)) => (k, false),
            (Some(a), None) => (a, a != DEFAULT_ALIGNMENT),
            (None, None) => (DEFAULT_ALIGNMENT, false),
        };
        if a == 0 || !a.is_power_of_two() || a > u64::from(u32::MAX) {
            return Err(Error::invalid(
                OP,
                format!("alignment {a} is not a nonzero power of two that fits in u32"),
            ));
        }
        Ok((a, append))
    }

    /// Header, metadata and tensor infos, unpadded; plus the alignment.
    fn encode_head(&self) -> Result<(Vec<u8>, u64)> {
        if !matches!(self.version, 2 | 3) {
            return Err(Error::invalid(
                OP,
                format!("version {} is not 2 or 3", self.version),
            ));
        }
        let (alignment, append_alignment) = self.effective_alignment()?;
        let mut seen = HashSet::with_capacity(self.kvs.len());
        for (k, _) in &self.kvs {
            if !seen.insert(k.as_str()) {
                return Err(Error::invalid(OP, format!("duplicate key '{k}'")));
            }
        }
        let align_kv = (ALIGNMENT_KEY.to_string(), Value::U32(alignment as u32));
        let kvs: Vec<&(String, Value)> = self
            .kvs
            .iter()
            .chain(append_alignment.then_some(&align_kv))
            .collect();

        let mut out = Vec::new();
        out.extend_from_slice(&GGUF_MAGIC);
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(kvs.len() as u64).to_le_bytes());
        for (k, v) in kvs {
            put_str(&mut out, k);
            out.extend_from_slice(&v.value_type().id().to_le_bytes());
            put_value(&mut out, v, 0).map_err(|e| Error::invalid(OP, format!("key '{k}': {e}")))?;
        }
        let mut offset = 0u64;
        for t in &self.tensors {
            put_str(&mut out, &t.name);
            out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            let id = t.dtype.ggml_id().ok_or_else(|| {
                Error::invalid(
                    OP,
                    format!("tensor '{}': {} is not a GGML type", t.name, t.dtype),
                )
            })?;
            out.extend_from_slice(&id.to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
            offset = align_up(offset + t.n_bytes, alignment)
                .ok_or_else(|| Error::invalid(OP, "data section size overflows"))?;
        }
        Ok((out, alignment))
    }

    /// Write the whole file to `w`. Every tensor must have been added with
    /// its data ([`GgufWriter::add_tensor`]).
    pub fn write_to(&self, w: &mut impl Write) -> Result<()> {
        self.write_to_with(w, &mut no_streamed_data)
    }

    /// Write the whole file to `w`, asking `data(index, name)` for the bytes
    /// of each tensor declared with [`GgufWriter::add_tensor_info`], in file
    /// order, one at a time (so at most one streamed tensor is alive). The
    /// bytes must number exactly what `add_tensor_info` returned.
    pub fn write_to_with<'d>(
        &self,
        w: &mut impl Write,
        data: &mut TensorDataFn<'_, 'd>,
    ) -> Result<()> {
        let io = |source| Error::Io {
            context: "writing GGUF".to_string(),
            source,
        };
        let (head, alignment) = self.encode_head()?;
        w.write_all(&head).map_err(io)?;
        let mut pos = head.len() as u64;
        // Zero padding up to the next multiple of the alignment, written in
        // small chunks (the alignment may be as large as 2^31).
        let pad = |w: &mut dyn Write, pos: &mut u64| -> Result<()> {
            const ZEROS: [u8; 4096] = [0; 4096];
            let target = align_up(*pos, alignment)
                .ok_or_else(|| Error::invalid(OP, "file size overflows"))?;
            while *pos < target {
                let n = (target - *pos).min(ZEROS.len() as u64) as usize;
                w.write_all(&ZEROS[..n]).map_err(io)?;
                *pos += n as u64;
            }
            Ok(())
        };
        pad(w, &mut pos)?;
        for (i, t) in self.tensors.iter().enumerate() {
            let bytes = match &t.data {
                Some(d) => Cow::Borrowed(d.as_slice()),
                None => data(i, &t.name)?,
            };
            if bytes.len() as u64 != t.n_bytes {
                return Err(Error::invalid(
                    OP,
                    format!(
                        "tensor '{}' ({}, dims {:?}) was given {} data bytes, expected {}",
                        t.name,
                        t.dtype,
                        t.dims,
                        bytes.len(),
                        t.n_bytes
                    ),
                ));
            }
            w.write_all(&bytes).map_err(io)?;
            pos += t.n_bytes;
            pad(w, &mut pos)?;
        }
        w.flush().map_err(io)
    }

    /// The whole file as bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.write_to(&mut out)?;
        Ok(out)
    }

    /// Write to `path` via a temporary file in the same directory, renamed
    /// into place once complete.
    pub fn write_file(&self, path: impl AsRef<Path>) -> Result<()> {
        self.write_file_with(path, &mut no_streamed_data)
    }

    /// [`GgufWriter::write_file`] with streamed tensor data, as in
    /// [`GgufWriter::write_to_with`]. On any error (including one returned by
    /// `data`) the temporary file is removed and `path` is left untouched.
    pub fn write_file_with<'d>(
        &self,
        path: impl AsRef<Path>,
        data: &mut TensorDataFn<'_, 'd>,
    ) -> Result<()> {
        let path = path.as_ref();
        let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
        tmp_name.push(format!(".tmp.{}", std::process::id()));
        let tmp = path.with_file_name(tmp_name);
        let result = self.write_tmp_then_rename(&tmp, path, data);
        if result.is_err() {
            // Best effort: the temporary may not exist if creation failed.
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    fn write_tmp_then_rename<'d>(
        &self,
        tmp: &Path,
        path: &Path,
        data: &mut TensorDataFn<'_, 'd>,
    ) -> Result<()> {
        let ctx = |what: &str, p: &Path| format!("{what} {}", p.display());
        let file = std::fs::File::create(tmp).map_err(|source| Error::Io {
            context: ctx("creating", tmp),
            source,
        })?;
        let mut w = std::io::BufWriter::new(file);
        self.write_to_with(&mut w, data)?;
        let file = w.into_inner().map_err(|e| Error::Io {
            context: ctx("writing", tmp),
            source: e.into_error(),
        })?;
        file.sync_all().map_err(|source| Error::Io {
            context: ctx("syncing", tmp),
            source,
        })?;
        std::fs::rename(tmp, path).map_err(|source| Error::Io {
            context: format!("renaming {} to {}", tmp.display(), path.display()),
            source,
        })
    }
}

/// The data callback of the non-streaming writers: every tensor has its data.
fn no_streamed_data<'d>(_: usize, name: &str) -> Result<Cow<'d, [u8]>> {
    Err(Error::invalid(
        OP,
        format!("tensor '{name}' was declared with add_tensor_info but no data callback was given"),
    ))
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Encode `v`'s payload (without its type id); `depth` counts enclosing arrays.
fn put_value(out: &mut Vec<u8>, v: &Value, depth: usize) -> std::result::Result<(), String> {
    match v {
        Value::U8(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I8(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => out.push(u8::from(*x)),
        Value::String(s) => put_str(out, s),
        Value::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Array(a) => {
            if depth + 1 > MAX_ARRAY_DEPTH {
                return Err(format!(
                    "arrays nested deeper than {MAX_ARRAY_DEPTH} levels"
                ));
            }
            out.extend_from_slice(&a.elem_type.id().to_le_bytes());
            out.extend_from_slice(&(a.items.len() as u64).to_le_bytes());
            for (i, item) in a.items.iter().enumerate() {
                if item.value_type() != a.elem_type {
                    return Err(format!(
                        "array of {} has item {i} of type {}",
                        a.elem_type,
                        item.type_name()
                    ));
                }
                put_value(out, item, depth + 1).map_err(|e| format!("item {i}: {e}"))?;
            }
        }
    }
    Ok(())
}
