//! Typed GGUF metadata values (`enum gguf_type` and `struct gguf_kv` in ggml's `gguf.cpp`).

use std::fmt;

/// The type of a metadata value. Discriminants are the GGUF type ids (`enum gguf_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum ValueType {
    U8 = 0,
    I8 = 1,
    U16 = 2,
    I16 = 3,
    U32 = 4,
    I32 = 5,
    F32 = 6,
    Bool = 7,
    String = 8,
    Array = 9,
    U64 = 10,
    I64 = 11,
    F64 = 12,
}

impl ValueType {
    /// Every value type, in id order.
    pub const ALL: [ValueType; 13] = {
        use ValueType::*;
        [
            U8, I8, U16, I16, U32, I32, F32, Bool, String, Array, U64, I64, F64,
        ]
    };

    /// The type with GGUF id `id`, or `None` if GGUF defines no such type.
    pub fn from_id(id: u32) -> Option<ValueType> {
        Self::ALL.get(id as usize).copied()
    }

    /// The GGUF type id as stored in files.
    pub const fn id(self) -> u32 {
        self as u32
    }

    /// Bytes of one value of a fixed-size type (`gguf_type_size`), or `None` for strings and
    /// arrays, whose size depends on their contents.
    pub const fn fixed_size(self) -> Option<usize> {
        use ValueType::*;
        match self {
            U8 | I8 | Bool => Some(1),
            U16 | I16 => Some(2),
            U32 | I32 | F32 => Some(4),
            U64 | I64 | F64 => Some(8),
            String | Array => None,
        }
    }

    /// The fewest bytes one value of this type can take in a file: a string is at least its
    /// 8-byte length, an array at least its 4-byte element type and 8-byte length.
    pub const fn min_encoded_size(self) -> usize {
        match self {
            ValueType::String => 8,
            ValueType::Array => 12,
            _ => match self.fixed_size() {
                Some(n) => n,
                None => 1,
            },
        }
    }

    /// ggml's short name for the type (`GGUF_TYPE_NAME` in gguf.cpp: `u8`, `str`, `arr`, ...).
    pub const fn name(self) -> &'static str {
        use ValueType::*;
        match self {
            U8 => "u8",
            I8 => "i8",
            U16 => "u16",
            I16 => "i16",
            U32 => "u32",
            I32 => "i32",
            F32 => "f32",
            Bool => "bool",
            String => "str",
            Array => "arr",
            U64 => "u64",
            I64 => "i64",
            F64 => "f64",
        }
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(Array),
    U64(u64),
    I64(i64),
    F64(f64),
}

/// An array value. `elem` is kept even when `values` is empty, so that empty arrays are written
/// back with the element type they were read with.
#[derive(Clone, Debug, PartialEq)]
pub struct Array {
    pub elem: ValueType,
    pub values: Vec<Value>,
}

impl Value {
    /// The type of this value (`gguf_get_kv_type`; an array reports `Array`).
    pub fn value_type(&self) -> ValueType {
        match self {
            Value::U8(_) => ValueType::U8,
            Value::I8(_) => ValueType::I8,
            Value::U16(_) => ValueType::U16,
            Value::I16(_) => ValueType::I16,
            Value::U32(_) => ValueType::U32,
            Value::I32(_) => ValueType::I32,
            Value::F32(_) => ValueType::F32,
            Value::Bool(_) => ValueType::Bool,
            Value::String(_) => ValueType::String,
            Value::Array(_) => ValueType::Array,
            Value::U64(_) => ValueType::U64,
            Value::I64(_) => ValueType::I64,
            Value::F64(_) => ValueType::F64,
        }
    }

    /// Any non-negative integer value, widened to u64 (ggml's typed getters require the exact
    /// type; model loaders accept any integer width, as llama.cpp's `get_key` does).
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// Any integer value that fits in an i64.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => i64::try_from(v).ok(),
            Value::I8(v) => Some(v.into()),
            Value::I16(v) => Some(v.into()),
            Value::I32(v) => Some(v.into()),
            Value::I64(v) => Some(v),
            _ => None,
        }
    }

    /// A float value (F32 as is, F64 rounded to f32) or an integer converted to f32.
    pub fn as_f32(&self) -> Option<f32> {
        match *self {
            Value::F32(v) => Some(v),
            Value::F64(v) => Some(v as f32),
            _ => self
                .as_i64()
                .map(|v| v as f32)
                .or_else(|| self.as_u64().map(|v| v as f32)),
        }
    }

    /// A bool value (`gguf_get_val_bool`).
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(v) => Some(v),
            _ => None,
        }
    }

    /// A string value (`gguf_get_val_str`).
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// An array value (`gguf_get_arr_n` / `gguf_get_arr_data` / `gguf_get_arr_str`).
    pub fn as_array(&self) -> Option<&Array> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
}

impl Array {
    /// The elements as strings, if this is an array of strings.
    pub fn strings(&self) -> Option<Vec<&str>> {
        if self.elem != ValueType::String {
            return None;
        }
        self.values.iter().map(Value::as_str).collect()
    }

    /// The elements as f32, if this is an array of numbers (see [`Value::as_f32`]).
    pub fn f32s(&self) -> Option<Vec<f32>> {
        if matches!(
            self.elem,
            ValueType::String | ValueType::Array | ValueType::Bool
        ) {
            return None;
        }
        self.values.iter().map(Value::as_f32).collect()
    }

    /// The elements as i64, if this is an array of integers that all fit.
    pub fn i64s(&self) -> Option<Vec<i64>> {
        self.values.iter().map(Value::as_i64).collect()
    }

    /// Number of elements (`gguf_get_arr_n`).
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

impl fmt::Display for Value {
    /// Scalars as plain text, strings quoted and escaped (`{:?}`), arrays in full as `[a, b]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::U8(v) => write!(f, "{v}"),
            Value::I8(v) => write!(f, "{v}"),
            Value::U16(v) => write!(f, "{v}"),
            Value::I16(v) => write!(f, "{v}"),
            Value::U32(v) => write!(f, "{v}"),
            Value::I32(v) => write!(f, "{v}"),
            Value::F32(v) => write!(f, "{v}"),
            Value::Bool(v) => write!(f, "{v}"),
            Value::String(v) => write!(f, "{v:?}"),
            Value::U64(v) => write!(f, "{v}"),
            Value::I64(v) => write!(f, "{v}"),
            Value::F64(v) => write!(f, "{v}"),
            Value::Array(a) => {
                f.write_str("[")?;
                for (i, v) in a.values.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{v}")?;
                }
                f.write_str("]")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip() {
        for t in ValueType::ALL {
            assert_eq!(ValueType::from_id(t.id()), Some(t));
        }
        assert_eq!(ValueType::from_id(13), None);
        assert_eq!(ValueType::from_id(u32::MAX), None);
    }

    #[test]
    fn integer_accessors_convert_only_when_they_fit() {
        assert_eq!(Value::I32(-1).as_u64(), None);
        assert_eq!(Value::I32(-1).as_i64(), Some(-1));
        assert_eq!(Value::U64(u64::MAX).as_i64(), None);
        assert_eq!(Value::U64(u64::MAX).as_u64(), Some(u64::MAX));
        assert_eq!(Value::U16(7).as_f32(), Some(7.0));
        assert_eq!(Value::String("x".into()).as_u64(), None);
        assert_eq!(Value::Bool(true).as_u64(), None);
    }

    #[test]
    fn array_views() {
        let a = Array {
            elem: ValueType::String,
            values: vec![Value::String("a".into()), Value::String("b".into())],
        };
        assert_eq!(a.strings(), Some(vec!["a", "b"]));
        assert_eq!(a.f32s(), None);
        let f = Array {
            elem: ValueType::F32,
            values: vec![Value::F32(0.5), Value::F32(-2.0)],
        };
        assert_eq!(f.f32s(), Some(vec![0.5, -2.0]));
        assert_eq!(f.strings(), None);
        assert_eq!(f.i64s(), None);
    }
}
