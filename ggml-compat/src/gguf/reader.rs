//! The bounded GGUF parser: every count, length and offset is checked against the bytes that
//! are actually there before anything is allocated or sliced (ggml's `gguf_init_from_reader`).

use std::collections::HashSet;

use super::{Array, GgufError, Header, TensorInfo, Value, ValueType};
use super::{DEFAULT_ALIGNMENT, KEY_ALIGNMENT, MAGIC, MAX_ARRAY_DEPTH, MAX_DIMS, MAX_NAME_LEN};
use crate::GgmlType;

/// Fewest bytes one metadata entry can take: key length (8) + 0-byte key + type (4) + 1 byte.
const MIN_KV_BYTES: u64 = 13;
/// Fewest bytes one tensor info can take: name length (8) + n_dims (4) + type (4) + offset (8).
const MIN_TENSOR_INFO_BYTES: u64 = 24;

/// A position in the input that never reads past its end.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn offset(&self) -> u64 {
        self.pos as u64
    }

    fn remaining(&self) -> u64 {
        (self.bytes.len() - self.pos) as u64
    }

    /// The next `n` bytes, or a `Truncated` error naming `what`.
    fn take(&mut self, n: u64, what: impl FnOnce() -> String) -> Result<&'a [u8], GgufError> {
        if n > self.remaining() {
            return Err(GgufError::Truncated {
                what: what(),
                offset: self.offset(),
                needed: n,
                available: self.remaining(),
            });
        }
        // n <= remaining <= usize::MAX, so the cast and the slice are in bounds.
        let out = &self.bytes[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(out)
    }

    fn array<const N: usize>(
        &mut self,
        what: impl FnOnce() -> String,
    ) -> Result<[u8; N], GgufError> {
        let b = self.take(N as u64, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(b);
        Ok(out)
    }

    fn u32(&mut self, what: impl FnOnce() -> String) -> Result<u32, GgufError> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: impl FnOnce() -> String) -> Result<u64, GgufError> {
        self.array(what).map(u64::from_le_bytes)
    }

    /// A GGUF string: u64 length then that many bytes of UTF-8. The length is checked against
    /// the remaining input before anything is allocated.
    fn string(&mut self, what: &dyn Fn() -> String) -> Result<String, GgufError> {
        let len = self.u64(|| format!("the length of {}", what()))?;
        let start = self.offset();
        let bytes = self.take(len, what)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_owned()),
            Err(_) => Err(GgufError::InvalidUtf8 {
                what: what(),
                offset: start,
            }),
        }
    }

    /// Check that `count` items of at least `min_each` bytes can fit in the remaining input;
    /// the count itself was read at `offset`.
    fn check_count(
        &self,
        count: u64,
        min_each: u64,
        offset: u64,
        what: &dyn Fn() -> String,
    ) -> Result<(), GgufError> {
        let fits = count
            .checked_mul(min_each)
            .is_some_and(|need| need <= self.remaining());
        if fits {
            Ok(())
        } else {
            Err(GgufError::CountTooLarge {
                what: what(),
                offset,
                count,
                min_bytes_each: min_each,
                available: self.remaining(),
            })
        }
    }

    fn value_type(&mut self, what: &dyn Fn() -> String) -> Result<ValueType, GgufError> {
        let offset = self.offset();
        let id = self.u32(|| format!("the value type of {}", what()))?;
        ValueType::from_id(id).ok_or_else(|| GgufError::UnknownValueType {
            what: what(),
            offset,
            id,
        })
    }

    /// One value of type `ty`; arrays recurse up to `MAX_ARRAY_DEPTH` levels.
    fn value(
        &mut self,
        ty: ValueType,
        depth: usize,
        what: &dyn Fn() -> String,
    ) -> Result<Value, GgufError> {
        Ok(match ty {
            ValueType::U8 => Value::U8(self.take(1, what)?[0]),
            ValueType::I8 => Value::I8(self.take(1, what)?[0] as i8),
            // ggml reads a bool as an int8 and treats any non-zero value as true.
            ValueType::Bool => Value::Bool(self.take(1, what)?[0] != 0),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.array(what)?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.array(what)?)),
            ValueType::U32 => Value::U32(u32::from_le_bytes(self.array(what)?)),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.array(what)?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.array(what)?)),
            ValueType::U64 => Value::U64(u64::from_le_bytes(self.array(what)?)),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.array(what)?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.array(what)?)),
            ValueType::String => Value::String(self.string(what)?),
            ValueType::Array => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(GgufError::NestingTooDeep {
                        what: what(),
                        offset: self.offset(),
                        max: MAX_ARRAY_DEPTH,
                    });
                }
                let elem = self.value_type(&|| format!("the elements of {}", what()))?;
                let len_offset = self.offset();
                let len = self.u64(|| format!("the length of {}", what()))?;
                let len_what = || format!("the length of {}", what());
                self.check_count(len, elem.min_encoded_size() as u64, len_offset, &len_what)?;
                // The check above bounds `len` by the input size, so this cannot over-allocate.
                let mut values = Vec::with_capacity(len as usize);
                for i in 0..len {
                    let item = || format!("{}[{i}]", what());
                    values.push(self.value(elem, depth + 1, &item)?);
                }
                Value::Array(Array { elem, values })
            }
        })
    }
}

/// Parse the header of a GGUF file (magic, version, metadata, tensor infos) from the whole
/// file's bytes and check every tensor's data range against them. Matches ggml's
/// `gguf_init_from_file_impl` with `no_alloc`, plus the bounds checks `llama_model_loader`
/// does on tensor data. Never panics and never reads out of bounds, whatever `bytes` holds.
pub fn parse(bytes: &[u8]) -> Result<Header, GgufError> {
    let mut cur = Cursor { bytes, pos: 0 };

    let magic = cur.array::<4>(|| "the magic".into())?;
    if &magic != MAGIC {
        return Err(GgufError::BadMagic {
            found: String::from_utf8_lossy(&magic).into_owned(),
        });
    }
    let version = cur.u32(|| "the version".into())?;
    check_version(version)?;

    let count_offset = cur.offset();
    let n_tensors = cur.u64(|| "the tensor count".into())?;
    let n_kv = cur.u64(|| "the metadata count".into())?;
    // Each count is bounded by the bytes its entries would take before anything is allocated
    // for them. The tensor count is checked once the metadata has been read, so that a file
    // cut short inside its metadata reports which key it was reading.
    cur.check_count(n_kv, MIN_KV_BYTES, count_offset + 8, &|| {
        "the metadata count".to_owned()
    })?;

    let metadata = read_metadata(&mut cur, n_kv)?;
    let alignment = alignment_of(&metadata)?;
    cur.check_count(n_tensors, MIN_TENSOR_INFO_BYTES, count_offset, &|| {
        "the tensor count".to_owned()
    })?;
    let tensors = read_tensor_infos(&mut cur, n_tensors)?;

    // ggml pads to the alignment only when there are tensors.
    let mut data_offset = cur.offset();
    if n_tensors > 0 {
        data_offset = pad(data_offset, alignment).unwrap_or(u64::MAX);
        if data_offset > bytes.len() as u64 {
            return Err(GgufError::DataSectionPastEof {
                data_offset,
                file_len: bytes.len() as u64,
            });
        }
    }
    check_tensor_ranges(&tensors, data_offset, alignment, bytes.len() as u64)?;

    Ok(Header {
        version,
        metadata,
        tensors,
        alignment,
        data_offset,
    })
}

fn check_version(version: u32) -> Result<(), GgufError> {
    let reason = match version {
        2 | 3 => return Ok(()),
        0 => "version 0 was never valid",
        1 => "GGUF v1 is no longer supported by ggml; convert the model again with a current llama.cpp",
        // A v3 file written big-endian reads as 0x03000000 on a little-endian host.
        v if v & 0xFFFF == 0 => "this looks like a big-endian GGUF file; only little-endian files are supported",
        _ => "this reader supports versions 2 and 3",
    };
    Err(GgufError::UnsupportedVersion { version, reason })
}

fn read_metadata(cur: &mut Cursor, n_kv: u64) -> Result<Vec<(String, Value)>, GgufError> {
    // n_kv * MIN_KV_BYTES <= input length was checked, so this capacity is bounded.
    let mut metadata = Vec::with_capacity(n_kv as usize);
    let mut seen = HashSet::with_capacity(n_kv as usize);
    for index in 0..n_kv {
        let key_offset = cur.offset();
        let key = cur.string(&|| format!("metadata key #{index}"))?;
        if key.is_empty() {
            return Err(GgufError::EmptyKey {
                index,
                offset: key_offset,
            });
        }
        if !seen.insert(key.clone()) {
            return Err(GgufError::DuplicateKey {
                key,
                offset: key_offset,
            });
        }
        let what = || format!("metadata key '{key}'");
        let ty = cur.value_type(&what)?;
        let value = cur.value(ty, 0, &what)?;
        metadata.push((key, value));
    }
    Ok(metadata)
}

/// `general.alignment` if present (ggml requires it to be a u32 power of two), else 32.
fn alignment_of(metadata: &[(String, Value)]) -> Result<u64, GgufError> {
    let Some((_, value)) = metadata.iter().find(|(k, _)| k == KEY_ALIGNMENT) else {
        return Ok(DEFAULT_ALIGNMENT);
    };
    let Value::U32(alignment) = *value else {
        return Err(GgufError::AlignmentType {
            found: value.value_type(),
        });
    };
    let alignment = u64::from(alignment);
    if !alignment.is_power_of_two() {
        return Err(GgufError::BadAlignment { alignment });
    }
    Ok(alignment)
}

fn read_tensor_infos(cur: &mut Cursor, n_tensors: u64) -> Result<Vec<TensorInfo>, GgufError> {
    // parse() checked n_tensors * MIN_TENSOR_INFO_BYTES against the remaining input.
    let mut tensors = Vec::with_capacity(n_tensors as usize);
    let mut seen = HashSet::with_capacity(n_tensors as usize);
    for index in 0..n_tensors {
        let name_offset = cur.offset();
        let name = cur.string(&|| format!("the name of tensor #{index}"))?;
        if name.len() > MAX_NAME_LEN {
            return Err(GgufError::TensorNameTooLong {
                index,
                offset: name_offset,
                len: name.len(),
            });
        }
        if !seen.insert(name.clone()) {
            return Err(GgufError::DuplicateTensor {
                name,
                offset: name_offset,
            });
        }
        let what = |field: &str| format!("the {field} of tensor '{name}'");

        let dims_offset = cur.offset();
        let n_dims = cur.u32(|| what("dimension count"))?;
        if n_dims as usize > MAX_DIMS {
            return Err(GgufError::TooManyDims {
                name,
                offset: dims_offset,
                n_dims,
            });
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for index in 0..n_dims as usize {
            let offset = cur.offset();
            let value = cur.u64(|| what("dimensions"))?;
            // ggml stores ne as int64 and requires it non-negative; a zero extent is refused too.
            if value == 0 || value > i64::MAX as u64 {
                return Err(GgufError::BadDim {
                    name,
                    offset,
                    index,
                    value,
                });
            }
            dims.push(value);
        }

        let type_offset = cur.offset();
        let type_id = cur.u32(|| what("type"))?;
        let ty = GgmlType::from_id(type_id).ok_or_else(|| GgufError::UnknownTensorType {
            name: name.clone(),
            offset: type_offset,
            id: type_id,
        })?;
        let size = tensor_size(&name, ty, &dims)?;
        let offset = cur.u64(|| what("data offset"))?;

        tensors.push(TensorInfo {
            name,
            ty,
            dims,
            offset,
            size,
        });
    }
    Ok(tensors)
}

/// Bytes of a tensor (`ggml_nbytes` for a contiguous tensor), refusing shapes whose element
/// count reaches 2^63 (ggml's INT64_MAX check) or whose rows are not whole blocks.
pub(crate) fn tensor_size(name: &str, ty: GgmlType, dims: &[u64]) -> Result<u64, GgufError> {
    let too_many = || GgufError::TooManyElements {
        name: name.to_owned(),
        dims: dims.to_vec(),
    };
    let n_elements = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n < i64::MAX as u64)
        .ok_or_else(too_many)?;
    let ne0 = dims.first().copied().unwrap_or(1);
    let block = ty.block_size();
    if ne0 % block as u64 != 0 {
        return Err(GgufError::NotBlockMultiple {
            name: name.to_owned(),
            ty,
            ne0,
            block,
        });
    }
    // ne0 is a multiple of the block size, so n_elements is too.
    (n_elements / block as u64)
        .checked_mul(ty.type_size() as u64)
        .ok_or_else(too_many)
}

/// Every tensor's data must start on an alignment boundary, end inside the file, and not
/// overlap any other tensor's data.
fn check_tensor_ranges(
    tensors: &[TensorInfo],
    data_offset: u64,
    alignment: u64,
    file_len: u64,
) -> Result<(), GgufError> {
    let mut ranges = Vec::with_capacity(tensors.len());
    for t in tensors {
        if t.offset % alignment != 0 {
            return Err(GgufError::MisalignedTensor {
                name: t.name.clone(),
                offset: t.offset,
                alignment,
            });
        }
        let start = data_offset.checked_add(t.offset);
        let end = start.and_then(|s| s.checked_add(t.size));
        match (start, end) {
            (Some(start), Some(end)) if end <= file_len => ranges.push((start, end, &t.name)),
            _ => {
                return Err(GgufError::TensorPastEof {
                    name: t.name.clone(),
                    start: start.unwrap_or(u64::MAX),
                    end: end.unwrap_or(u64::MAX),
                    file_len,
                })
            }
        }
    }
    ranges.sort_unstable();
    for pair in ranges.windows(2) {
        let ((a_start, a_end, a), (b_start, _, b)) = (pair[0], pair[1]);
        if b_start < a_end {
            return Err(GgufError::OverlappingTensors {
                first: a.clone(),
                first_start: a_start,
                first_end: a_end,
                second: b.clone(),
                second_start: b_start,
            });
        }
    }
    Ok(())
}

/// `x` rounded up to a multiple of the power of two `align` (`GGML_PAD`), or `None` on overflow.
pub(crate) fn pad(x: u64, align: u64) -> Option<u64> {
    Some(x.checked_add(align - 1)? & !(align - 1))
}
