//! The streaming GGUF writer (ggml's `gguf_write_out` with a file writer): header and tensor
//! infos first, then each tensor's data padded to the alignment, into `OUT.tmp` beside `OUT`,
//! renamed into place only by [`GgufWriter::finish`].

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::reader::{pad, tensor_size};
use super::{GgufError, TensorInfo, Value};
use super::{DEFAULT_ALIGNMENT, KEY_ALIGNMENT, MAGIC, MAX_ARRAY_DEPTH, MAX_DIMS, MAX_NAME_LEN};
use crate::GgmlType;

/// A tensor to be written: its data offset is computed by the writer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfoOut {
    pub name: String,
    pub ty: GgmlType,
    /// ggml order, `dims[0]` = row length; written as given (0..=4 of them).
    pub dims: Vec<u64>,
}

impl From<&TensorInfo> for TensorInfoOut {
    fn from(t: &TensorInfo) -> Self {
        TensorInfoOut {
            name: t.name.clone(),
            ty: t.ty,
            dims: t.dims.clone(),
        }
    }
}

/// Writes one GGUF file. Dropping it before [`finish`](GgufWriter::finish) removes the
/// temporary file, so a failed or interrupted write never leaves a partial `OUT`.
#[derive(Debug)]
pub struct GgufWriter {
    path: PathBuf,
    tmp: PathBuf,
    out: BufWriter<File>,
    alignment: u64,
    /// Name and byte size of each declared tensor, in order.
    tensors: Vec<(String, u64)>,
    next: usize,
    pos: u64,
    done: bool,
}

impl GgufWriter {
    /// Validate everything, then write the header, metadata and tensor infos (offsets
    /// computed as `gguf_add_tensor` does: each tensor starts at the previous one's end,
    /// padded to `alignment`) and, if there are tensors, the padding up to the data section.
    ///
    /// `metadata` must hold `general.alignment` as a u32 equal to `alignment` unless
    /// `alignment` is the default 32 (then the key is optional).
    pub fn create(
        path: impl AsRef<Path>,
        version: u32,
        alignment: u64,
        metadata: &[(String, Value)],
        tensors: &[TensorInfoOut],
    ) -> Result<GgufWriter, GgufError> {
        let path = path.as_ref().to_path_buf();
        let in_file = |e: GgufError| e.in_file(&path);
        let header = encode_header(version, alignment, metadata, tensors).map_err(in_file)?;

        let mut name = path.file_name().unwrap_or_default().to_os_string();
        name.push(".tmp");
        let tmp = path.with_file_name(name);
        let file = File::create(&tmp).map_err(|error| GgufError::Io {
            path: tmp.clone(),
            error,
        })?;
        let mut writer = GgufWriter {
            path,
            tmp,
            out: BufWriter::with_capacity(1 << 20, file),
            alignment,
            tensors: header.sizes,
            next: 0,
            pos: 0,
            done: false,
        };
        writer.write(&header.bytes)?;
        // Padding before the data section only when there is data: ggml's reader does not
        // expect it otherwise, and gguf-py's vocab-only files (shared/vocab) have none.
        // (ggml's own writer pads unconditionally; both read the same.)
        if !writer.tensors.is_empty() {
            writer.pad()?;
        }
        Ok(writer)
    }

    /// Write the data of the next declared tensor, which must be named `name` and be exactly
    /// its declared size, followed by zero padding to the alignment (`write_tensor_data`).
    pub fn write_tensor_data(&mut self, name: &str, data: &[u8]) -> Result<(), GgufError> {
        let Some((expected, size)) = self.tensors.get(self.next) else {
            return Err(self.error(format!(
                "tensor '{name}' written, but all {} declared tensors were already written",
                self.tensors.len()
            )));
        };
        if expected != name {
            return Err(self.error(format!(
                "tensor '{name}' written, but the next declared tensor is '{expected}'"
            )));
        }
        if data.len() as u64 != *size {
            return Err(self.error(format!(
                "tensor '{name}' is declared as {size} bytes but {} bytes were given",
                data.len()
            )));
        }
        self.write(data)?;
        self.pad()?;
        self.next += 1;
        Ok(())
    }

    /// Check every tensor was written, flush and fsync, then rename the temporary file into
    /// place.
    pub fn finish(mut self) -> Result<(), GgufError> {
        if self.next != self.tensors.len() {
            return Err(self.error(format!(
                "finished after {} of {} tensors; next missing: '{}'",
                self.next,
                self.tensors.len(),
                self.tensors[self.next].0
            )));
        }
        let tmp = self.tmp.clone();
        let io = |error| GgufError::Io {
            path: tmp.clone(),
            error,
        };
        self.out.flush().map_err(io)?;
        self.out.get_ref().sync_all().map_err(io)?;
        fs::rename(&self.tmp, &self.path).map_err(|error| GgufError::Io {
            path: self.path.clone(),
            error,
        })?;
        self.done = true;
        Ok(())
    }

    fn error(&self, message: String) -> GgufError {
        GgufError::Writer(message).in_file(&self.path)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), GgufError> {
        self.out.write_all(bytes).map_err(|error| GgufError::Io {
            path: self.tmp.clone(),
            error,
        })?;
        self.pos += bytes.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> Result<(), GgufError> {
        const ZEROS: [u8; 256] = [0; 256];
        let mut n = pad(self.pos, self.alignment).unwrap_or(self.pos) - self.pos;
        while n > 0 {
            let k = n.min(ZEROS.len() as u64);
            self.write(&ZEROS[..k as usize])?;
            n -= k;
        }
        Ok(())
    }
}

impl Drop for GgufWriter {
    fn drop(&mut self) {
        if !self.done {
            // Best effort: the error that got us here is what the caller needs to see.
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

struct EncodedHeader {
    bytes: Vec<u8>,
    sizes: Vec<(String, u64)>,
}

/// Everything up to (not including) the padding before the data section.
fn encode_header(
    version: u32,
    alignment: u64,
    metadata: &[(String, Value)],
    tensors: &[TensorInfoOut],
) -> Result<EncodedHeader, GgufError> {
    let err = |m: String| Err(GgufError::Writer(m));
    if !matches!(version, 2 | 3) {
        return err(format!(
            "version {version}: only GGUF v2 and v3 can be written"
        ));
    }
    if !alignment.is_power_of_two() {
        return Err(GgufError::BadAlignment { alignment });
    }
    match metadata.iter().find(|(k, _)| k == KEY_ALIGNMENT) {
        Some((_, Value::U32(a))) if u64::from(*a) == alignment => {}
        None if alignment == DEFAULT_ALIGNMENT => {}
        Some((_, v)) => {
            return err(format!(
                "metadata '{KEY_ALIGNMENT}' is {v} ({}) but the alignment is {alignment} (u32 required)",
                v.value_type()
            ))
        }
        None => {
            return err(format!(
                "alignment {alignment} needs metadata '{KEY_ALIGNMENT}' = {alignment}u32"
            ))
        }
    }

    let mut b = Vec::new();
    b.extend_from_slice(MAGIC);
    b.extend_from_slice(&version.to_le_bytes());
    b.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    b.extend_from_slice(&(metadata.len() as u64).to_le_bytes());

    let mut keys = HashSet::new();
    for (key, value) in metadata {
        if key.is_empty() {
            return err("empty metadata key".into());
        }
        if !keys.insert(key.as_str()) {
            return err(format!("duplicate metadata key '{key}'"));
        }
        put_string(&mut b, key);
        b.extend_from_slice(&value.value_type().id().to_le_bytes());
        put_value(&mut b, value, 0).map_err(|m| GgufError::Writer(format!("key '{key}': {m}")))?;
    }

    let mut names = HashSet::new();
    let mut sizes = Vec::with_capacity(tensors.len());
    let mut offset = 0u64;
    for t in tensors {
        if t.name.len() > MAX_NAME_LEN {
            return err(format!(
                "tensor name '{}' is longer than {MAX_NAME_LEN} bytes",
                t.name
            ));
        }
        if !names.insert(t.name.as_str()) {
            return err(format!("duplicate tensor name '{}'", t.name));
        }
        if t.dims.len() > MAX_DIMS || t.dims.iter().any(|&d| d == 0 || d > i64::MAX as u64) {
            return err(format!(
                "tensor '{}' has invalid shape {:?}",
                t.name, t.dims
            ));
        }
        let size = tensor_size(&t.name, t.ty, &t.dims)?;
        put_string(&mut b, &t.name);
        b.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
        for d in &t.dims {
            b.extend_from_slice(&d.to_le_bytes());
        }
        b.extend_from_slice(&t.ty.id().to_le_bytes());
        b.extend_from_slice(&offset.to_le_bytes());
        offset = pad(size, alignment)
            .and_then(|s| offset.checked_add(s))
            .ok_or_else(|| GgufError::Writer("total tensor data exceeds 2^64 bytes".into()))?;
        sizes.push((t.name.clone(), size));
    }
    Ok(EncodedHeader { bytes: b, sizes })
}

fn put_string(b: &mut Vec<u8>, s: &str) {
    b.extend_from_slice(&(s.len() as u64).to_le_bytes());
    b.extend_from_slice(s.as_bytes());
}

/// A value's bytes (without its type id, which the caller writes). Array elements must all
/// have the array's declared element type, or the file would not read back.
fn put_value(b: &mut Vec<u8>, value: &Value, depth: usize) -> Result<(), String> {
    match value {
        Value::U8(v) => b.push(*v),
        Value::I8(v) => b.push(*v as u8),
        Value::Bool(v) => b.push(u8::from(*v)),
        Value::U16(v) => b.extend_from_slice(&v.to_le_bytes()),
        Value::I16(v) => b.extend_from_slice(&v.to_le_bytes()),
        Value::U32(v) => b.extend_from_slice(&v.to_le_bytes()),
        Value::I32(v) => b.extend_from_slice(&v.to_le_bytes()),
        Value::F32(v) => b.extend_from_slice(&v.to_le_bytes()),
        Value::U64(v) => b.extend_from_slice(&v.to_le_bytes()),
        Value::I64(v) => b.extend_from_slice(&v.to_le_bytes()),
        Value::F64(v) => b.extend_from_slice(&v.to_le_bytes()),
        Value::String(s) => put_string(b, s),
        Value::Array(a) => {
            if depth >= MAX_ARRAY_DEPTH {
                return Err(format!(
                    "arrays nested deeper than {MAX_ARRAY_DEPTH} levels"
                ));
            }
            b.extend_from_slice(&a.elem.id().to_le_bytes());
            b.extend_from_slice(&(a.values.len() as u64).to_le_bytes());
            for (i, v) in a.values.iter().enumerate() {
                if v.value_type() != a.elem {
                    return Err(format!(
                        "element {i} is {} in an array of {}",
                        v.value_type(),
                        a.elem
                    ));
                }
                put_value(b, v, depth + 1).map_err(|m| format!("[{i}]: {m}"))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::{Array, ValueType};

    #[test]
    fn array_elements_must_match_the_declared_type() {
        let bad = Value::Array(Array {
            elem: ValueType::U32,
            values: vec![Value::U32(1), Value::I32(2)],
        });
        let mut b = Vec::new();
        let e = put_value(&mut b, &bad, 0).unwrap_err();
        assert!(e.contains("element 1 is i32"), "{e}");
    }
}
