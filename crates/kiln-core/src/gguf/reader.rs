//! [`GgufFile`]: a parsed GGUF v2/v3 file (ggml `docs/gguf.md`) that owns
//! its bytes (a read-only memory map, or a `Vec<u8>`), with typed metadata
//! getters and zero-copy access to tensor data.

use super::parse::{parse_header, Header};
use super::{TensorInfo, Value, ValueType};
use crate::{Error, Result};
use memmap2::Mmap;
use std::path::Path;

/// The bytes behind a [`GgufFile`].
enum Storage {
    Mmap(Mmap),
    Owned(Vec<u8>),
}

impl Storage {
    fn bytes(&self) -> &[u8] {
        match self {
            Storage::Mmap(m) => m,
            Storage::Owned(v) => v,
        }
    }
}

/// A parsed GGUF file. Metadata and tensor infos are parsed and validated
/// up front; tensor data stays in the mapped file.
pub struct GgufFile {
    storage: Storage,
    header: Header,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("version", &self.header.version)
            .field("alignment", &self.header.alignment)
            .field("n_kv", &self.header.metadata.len())
            .field("n_tensors", &self.header.tensors.len())
            .field("data_offset", &self.header.data_offset)
            .field("len", &self.storage.bytes().len())
            .finish()
    }
}

impl GgufFile {
    /// Memory-map and parse the file at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile> {
        let path = path.as_ref();
        let file = std::fs::File::open(path).map_err(|source| Error::Io {
            context: format!("opening GGUF file {}", path.display()),
            source,
        })?;
        // SAFETY: the map is read-only and lives as long as `GgufFile`. If
        // another process truncates or rewrites the file while it is mapped,
        // reads may see changed bytes or fault; that is the accepted cost of
        // zero-copy weights (every loader of GGUF files mmaps them). All
        // bounds were checked against the length at map time.
        let map = unsafe { Mmap::map(&file) }.map_err(|source| Error::Io {
            context: format!("memory-mapping GGUF file {}", path.display()),
            source,
        })?;
        let header = parse_header(&map).map_err(|e| match e {
            Error::Gguf(msg) => Error::Gguf(format!("{}: {msg}", path.display())),
            other => other,
        })?;
        Ok(GgufFile {
            storage: Storage::Mmap(map),
            header,
        })
    }

    /// Parse a GGUF file held in memory.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<GgufFile> {
        let header = parse_header(&bytes)?;
        Ok(GgufFile {
            storage: Storage::Owned(bytes),
            header,
        })
    }

    /// Format version (2 or 3).
    pub fn version(&self) -> u32 {
        self.header.version
    }

    /// Data alignment (`general.alignment`, default 32).
    pub fn alignment(&self) -> u64 {
        self.header.alignment
    }

    /// All metadata key/value pairs, in file order.
    pub fn metadata(&self) -> &[(String, Value)] {
        &self.header.metadata
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.header
            .key_index
            .get(key)
            .map(|&i| &self.header.metadata[i].1)
    }

    fn require(&self, key: &str) -> Result<&Value> {
        self.get(key)
            .ok_or_else(|| Error::Gguf(format!("missing key {key}")))
    }

    fn type_error(key: &str, v: &Value, expected: &str) -> Error {
        Error::Gguf(format!(
            "key {key} has type {}, expected {expected}",
            v.type_name()
        ))
    }

    /// An integer value that fits in u32 (any integer type is accepted).
    pub fn get_u32(&self, key: &str) -> Result<u32> {
        let v = self.require(key)?;
        match v.as_u32() {
            Some(x) => Ok(x),
            None if v.is_integer() => Err(Error::Gguf(format!(
                "key {key} has value {v}, which does not fit in u32"
            ))),
            None => Err(Self::type_error(key, v, "u32")),
        }
    }

    /// A non-negative integer value (any integer type is accepted).
    pub fn get_u64(&self, key: &str) -> Result<u64> {
        let v = self.require(key)?;
        match v.as_u64() {
            Some(x) => Ok(x),
            None if v.is_integer() => Err(Error::Gguf(format!(
                "key {key} has value {v}, which does not fit in u64"
            ))),
            None => Err(Self::type_error(key, v, "u64")),
        }
    }

    /// An f32 (or f64, rounded) value.
    pub fn get_f32(&self, key: &str) -> Result<f32> {
        let v = self.require(key)?;
        v.as_f32().ok_or_else(|| Self::type_error(key, v, "f32"))
    }

    /// A string value.
    pub fn get_str(&self, key: &str) -> Result<&str> {
        let v = self.require(key)?;
        v.as_str().ok_or_else(|| Self::type_error(key, v, "string"))
    }

    /// A bool value.
    pub fn get_bool(&self, key: &str) -> Result<bool> {
        let v = self.require(key)?;
        v.as_bool().ok_or_else(|| Self::type_error(key, v, "bool"))
    }

    /// An array value (element type + items).
    pub fn get_array(&self, key: &str) -> Result<&super::ArrayValue> {
        let v = self.require(key)?;
        v.as_array_value()
            .ok_or_else(|| Self::type_error(key, v, "array"))
    }

    /// An array of strings.
    pub fn get_str_array(&self, key: &str) -> Result<Vec<&str>> {
        let v = self.require(key)?;
        match v.as_array_value() {
            Some(a) if a.elem_type == ValueType::String => {
                Ok(a.items.iter().filter_map(Value::as_str).collect())
            }
            _ => Err(Self::type_error(key, v, "array[string]")),
        }
    }

    /// An array of f32 (f64 items are rounded).
    pub fn get_f32_array(&self, key: &str) -> Result<Vec<f32>> {
        let v = self.require(key)?;
        match v.as_array_value() {
            Some(a) if matches!(a.elem_type, ValueType::F32 | ValueType::F64) => {
                Ok(a.items.iter().filter_map(Value::as_f32).collect())
            }
            _ => Err(Self::type_error(key, v, "array[f32]")),
        }
    }

    /// An array of integers that each fit in i32.
    pub fn get_i32_array(&self, key: &str) -> Result<Vec<i32>> {
        let v = self.require(key)?;
        let a = match v.as_array_value() {
            Some(a)
                if a.elem_type.fixed_size().is_some() && a.items.iter().all(Value::is_integer) =>
            {
                a
            }
            _ => return Err(Self::type_error(key, v, "array[i32]")),
        };
        a.items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                item.as_i32().ok_or_else(|| {
                    Error::Gguf(format!(
                        "key {key} item {i} has value {item}, which does not fit in i32"
                    ))
                })
            })
            .collect()
    }

    /// All tensor infos, in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.header.tensors
    }

    /// The info of tensor `name`, if present.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.header
            .tensor_index
            .get(name)
            .map(|&i| &self.header.tensors[i])
    }

    /// The raw bytes of a tensor (GGML layout). `info` is checked against
    /// this file, so an info from another file gives an error, not a panic.
    pub fn tensor_data(&self, info: &TensorInfo) -> Result<&[u8]> {
        let bytes = self.storage.bytes();
        let range = self
            .header
            .data_offset
            .checked_add(info.offset)
            .and_then(|start| Some((start, start.checked_add(info.n_bytes)?)))
            .and_then(|(s, e)| Some((usize::try_from(s).ok()?, usize::try_from(e).ok()?)))
            .filter(|&(_, e)| e <= bytes.len());
        match range {
            Some((s, e)) => Ok(&bytes[s..e]),
            None => Err(Error::Gguf(format!(
                "tensor '{}' (data offset {}, {} bytes) is outside the file ({} bytes)",
                info.name,
                info.offset,
                info.n_bytes,
                bytes.len()
            ))),
        }
    }

    /// The whole file's bytes (for zero-copy users).
    pub fn data(&self) -> &[u8] {
        self.storage.bytes()
    }

    /// Absolute byte offset of the data section.
    pub fn data_offset(&self) -> u64 {
        self.header.data_offset
    }
}
