//! Bounded parser for the GGUF v2/v3 header, metadata and tensor-info table
//! (ggml `docs/gguf.md`).
//!
//! Every read goes through [`Cursor`], which checks the bytes that remain;
//! every count is checked against the remaining bytes (times the smallest
//! encoding of one item) before a vector is sized from it. Internal errors
//! are plain `String`s, prefixed with context (key, tensor, item index) on
//! the way up and turned into [`Error::Gguf`] at the top.

use super::{
    align_up, ggml_type_name, tensor_n_bytes, ArrayValue, TensorInfo, Value, ValueType,
    ALIGNMENT_KEY, DEFAULT_ALIGNMENT, GGUF_MAGIC, MAX_ARRAY_DEPTH, MAX_DIMS,
};
use crate::{DType, Error, Result};
use std::collections::HashMap;

type PResult<T> = std::result::Result<T, String>;

/// Smallest encoded key/value pair: u64 key length, u32 type, 1-byte value.
const MIN_KV_BYTES: usize = 8 + 4 + 1;
/// Smallest encoded tensor info: u64 name length, u32 n_dims, one u64 ne,
/// u32 type, u64 offset.
const MIN_TENSOR_INFO_BYTES: usize = 8 + 4 + 8 + 4 + 8;

/// Everything in a GGUF file before the data section.
#[derive(Debug)]
pub(crate) struct Header {
    pub version: u32,
    pub alignment: u64,
    pub metadata: Vec<(String, Value)>,
    pub key_index: HashMap<String, usize>,
    pub tensors: Vec<TensorInfo>,
    pub tensor_index: HashMap<String, usize>,
    pub data_offset: u64,
}

/// A bounds-checked little-endian reader over a byte slice.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &str) -> PResult<&'a [u8]> {
        let rem = self.remaining();
        if n > rem {
            return Err(format!(
                "truncated at byte {}: {what} needs {n} bytes, {rem} left",
                self.pos
            ));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> PResult<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, what)?);
        Ok(a)
    }

    fn u32(&mut self, what: &str) -> PResult<u32> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &str) -> PResult<u64> {
        self.array(what).map(u64::from_le_bytes)
    }

    /// A GGUF string: u64 length then that many UTF-8 bytes.
    fn string(&mut self, what: &str) -> PResult<String> {
        let start = self.pos;
        let len = self.u64(what)?;
        let rem = self.remaining();
        let n = usize::try_from(len)
            .ok()
            .filter(|&n| n <= rem)
            .ok_or_else(|| {
                format!(
                    "truncated: {what} at byte {start} has length {len}, but only {rem} bytes are left"
                )
            })?;
        let bytes = self.take(n, what)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_owned()),
            Err(e) => Err(format!(
                "{what} at byte {start} is not valid UTF-8 (bad byte at {})",
                start + 8 + e.valid_up_to()
            )),
        }
    }

    fn value_type(&mut self, what: &str) -> PResult<ValueType> {
        let at = self.pos;
        let id = self.u32(what)?;
        ValueType::from_id(id).ok_or_else(|| format!("unknown {what} {id} at byte {at}"))
    }

    /// One value of type `ty`; `depth` counts the arrays around it.
    fn value(&mut self, ty: ValueType, depth: usize) -> PResult<Value> {
        Ok(match ty {
            ValueType::U8 => Value::U8(u8::from_le_bytes(self.array("u8 value")?)),
            ValueType::I8 => Value::I8(i8::from_le_bytes(self.array("i8 value")?)),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.array("u16 value")?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.array("i16 value")?)),
            ValueType::U32 => Value::U32(self.u32("u32 value")?),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.array("i32 value")?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.array("f32 value")?)),
            ValueType::U64 => Value::U64(self.u64("u64 value")?),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.array("i64 value")?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.array("f64 value")?)),
            ValueType::Bool => {
                let at = self.pos;
                match self.array::<1>("bool value")?[0] {
                    0 => Value::Bool(false),
                    1 => Value::Bool(true),
                    b => return Err(format!("bool at byte {at} has value {b}, expected 0 or 1")),
                }
            }
            ValueType::String => Value::String(self.string("string value")?),
            ValueType::Array => Value::Array(self.array_value(depth + 1)?),
        })
    }

    /// An array body: u32 element type, u64 count, elements.
    fn array_value(&mut self, depth: usize) -> PResult<ArrayValue> {
        let at = self.pos;
        if depth > MAX_ARRAY_DEPTH {
            return Err(format!(
                "array at byte {at} is nested deeper than {MAX_ARRAY_DEPTH} levels"
            ));
        }
        let elem_type = self.value_type("array element type")?;
        let count = self.u64("array count")?;
        let rem = self.remaining();
        let min = elem_type.min_size();
        let n = usize::try_from(count)
            .ok()
            .filter(|&n| n.checked_mul(min).is_some_and(|b| b <= rem))
            .ok_or_else(|| {
                format!(
                    "array at byte {at} claims {count} {elem_type} items (at least {min} bytes each), \
                     but only {rem} bytes are left"
                )
            })?;
        let mut items = Vec::with_capacity(n);
        match elem_type {
            // Hot path for vocabularies (tens of thousands of strings).
            ValueType::String => {
                for i in 0..n {
                    let s = self
                        .string("string item")
                        .map_err(|e| format!("item {i}: {e}"))?;
                    items.push(Value::String(s));
                }
            }
            _ => {
                for i in 0..n {
                    let v = self
                        .value(elem_type, depth)
                        .map_err(|e| format!("item {i}: {e}"))?;
                    items.push(v);
                }
            }
        }
        Ok(ArrayValue { elem_type, items })
    }
}

/// Read the header, metadata and tensor infos of `buf` and check every
/// tensor range against the file size.
pub(crate) fn parse_header(buf: &[u8]) -> Result<Header> {
    parse_inner(buf).map_err(Error::Gguf)
}

fn parse_inner(buf: &[u8]) -> PResult<Header> {
    let mut c = Cursor { buf, pos: 0 };
    if buf.len() < 4 {
        return Err(format!(
            "file is {} bytes, too short for the GGUF magic",
            buf.len()
        ));
    }
    let magic: [u8; 4] = c.array("magic")?;
    if magic != GGUF_MAGIC {
        return Err(format!(
            "bad magic {:?} ({:02x} {:02x} {:02x} {:02x}), expected \"GGUF\"",
            String::from_utf8_lossy(&magic),
            magic[0],
            magic[1],
            magic[2],
            magic[3]
        ));
    }
    let version = c.u32("version")?;
    match version {
        2 | 3 => {}
        1 => {
            return Err("version 1 is not supported (only GGUF v2 and v3 are)".to_string());
        }
        v if v.swap_bytes() == 2 || v.swap_bytes() == 3 => {
            return Err(format!(
                "big-endian GGUF (version {} byte-swapped) is not supported",
                v.swap_bytes()
            ));
        }
        v => return Err(format!("unsupported version {v} (only 2 and 3 are)")),
    }
    let tensor_count = c.u64("tensor count")?;
    let kv_count = c.u64("metadata kv count")?;

    let metadata = read_metadata(&mut c, kv_count)?;
    let mut key_index = HashMap::with_capacity(metadata.len());
    for (i, (k, _)) in metadata.iter().enumerate() {
        if let Some(first) = key_index.insert(k.clone(), i) {
            return Err(format!(
                "duplicate key '{k}' (metadata entries {first} and {i})"
            ));
        }
    }
    let alignment = match key_index.get(ALIGNMENT_KEY).map(|&i| &metadata[i].1) {
        None => DEFAULT_ALIGNMENT,
        Some(v) => {
            let a = v.as_u64().ok_or_else(|| {
                format!(
                    "key '{ALIGNMENT_KEY}' has type {} (value {v}), expected u32",
                    v.type_name()
                )
            })?;
            if a == 0 || !a.is_power_of_two() || a > u64::from(u32::MAX) {
                return Err(format!(
                    "key '{ALIGNMENT_KEY}' is {a}, expected a nonzero power of two (u32)"
                ));
            }
            a
        }
    };

    let tensors = read_tensor_infos(&mut c, tensor_count, alignment)?;
    let mut tensor_index = HashMap::with_capacity(tensors.len());
    for (i, t) in tensors.iter().enumerate() {
        if let Some(first) = tensor_index.insert(t.name.clone(), i) {
            return Err(format!(
                "duplicate tensor name '{}' (tensor infos {first} and {i})",
                t.name
            ));
        }
    }

    let data_offset = align_up(c.pos as u64, alignment)
        .ok_or_else(|| "data section offset overflows".to_string())?;
    check_tensor_ranges(&tensors, data_offset, buf.len() as u64)?;

    Ok(Header {
        version,
        alignment,
        metadata,
        key_index,
        tensors,
        tensor_index,
        data_offset,
    })
}

fn read_metadata(c: &mut Cursor<'_>, kv_count: u64) -> PResult<Vec<(String, Value)>> {
    let rem = c.remaining();
    let n = usize::try_from(kv_count)
        .ok()
        .filter(|&n| n.checked_mul(MIN_KV_BYTES).is_some_and(|b| b <= rem))
        .ok_or_else(|| {
            format!(
                "metadata kv count {kv_count} needs at least {MIN_KV_BYTES} bytes each, \
                 but only {rem} bytes are left"
            )
        })?;
    let mut metadata = Vec::with_capacity(n);
    for i in 0..n {
        let at = c.pos;
        let key = c
            .string("key")
            .map_err(|e| format!("metadata entry {i}: {e}"))?;
        let ty = c
            .value_type("value type")
            .and_then(|ty| c.value(ty, 0))
            .map_err(|e| format!("key '{key}' (entry {i} at byte {at}): {e}"))?;
        metadata.push((key, ty));
    }
    Ok(metadata)
}

fn read_tensor_infos(
    c: &mut Cursor<'_>,
    tensor_count: u64,
    alignment: u64,
) -> PResult<Vec<TensorInfo>> {
    let rem = c.remaining();
    let n = usize::try_from(tensor_count)
        .ok()
        .filter(|&n| {
            n.checked_mul(MIN_TENSOR_INFO_BYTES)
                .is_some_and(|b| b <= rem)
        })
        .ok_or_else(|| {
            format!(
                "tensor count {tensor_count} needs at least {MIN_TENSOR_INFO_BYTES} bytes each, \
                 but only {rem} bytes are left"
            )
        })?;
    let mut tensors = Vec::with_capacity(n);
    for i in 0..n {
        let at = c.pos;
        let name = c
            .string("tensor name")
            .map_err(|e| format!("tensor info {i} at byte {at}: {e}"))?;
        let info = read_one_tensor_info(c, name.clone(), alignment)
            .map_err(|e| format!("tensor '{name}' (info {i} at byte {at}): {e}"))?;
        tensors.push(info);
    }
    Ok(tensors)
}

fn read_one_tensor_info(c: &mut Cursor<'_>, name: String, alignment: u64) -> PResult<TensorInfo> {
    let n_dims = c.u32("n_dims")?;
    if n_dims == 0 || n_dims as usize > MAX_DIMS {
        return Err(format!("n_dims {n_dims} is not in 1..={MAX_DIMS}"));
    }
    let mut dims = Vec::with_capacity(n_dims as usize);
    for _ in 0..n_dims {
        dims.push(c.u64("dimension")?);
    }
    let type_at = c.pos;
    let type_id = c.u32("tensor type")?;
    let dtype = DType::from_ggml_id(type_id).map_err(|_| match ggml_type_name(type_id) {
        Some(n) => format!("GGML type {type_id} ({n}) at byte {type_at} is not supported by kiln"),
        None => format!("unknown GGML type id {type_id} at byte {type_at}"),
    })?;
    let offset = c.u64("tensor offset")?;
    if offset % alignment != 0 {
        return Err(format!(
            "offset {offset} is not a multiple of the alignment {alignment}"
        ));
    }
    let n_bytes = tensor_n_bytes(&dims, dtype)?;
    Ok(TensorInfo {
        name,
        dims,
        dtype,
        offset,
        n_bytes,
    })
}

/// Every tensor lies inside the file and no two overlap.
fn check_tensor_ranges(tensors: &[TensorInfo], data_offset: u64, file_len: u64) -> PResult<()> {
    for t in tensors {
        let end = data_offset
            .checked_add(t.offset)
            .and_then(|s| s.checked_add(t.n_bytes));
        if end.is_none_or(|e| e > file_len) {
            return Err(format!(
                "tensor '{}' (data offset {}, {} bytes, data section at byte {data_offset}) \
                 extends past the end of the file ({file_len} bytes)",
                t.name, t.offset, t.n_bytes
            ));
        }
    }
    let mut order: Vec<&TensorInfo> = tensors.iter().collect();
    order.sort_by_key(|t| t.offset);
    for pair in order.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        // Cannot overflow: both ranges were checked to end inside the file.
        if a.offset + a.n_bytes > b.offset {
            return Err(format!(
                "tensors '{}' (data bytes {}..{}) and '{}' (from {}) overlap",
                a.name,
                a.offset,
                a.offset + a.n_bytes,
                b.name,
                b.offset
            ));
        }
    }
    Ok(())
}
