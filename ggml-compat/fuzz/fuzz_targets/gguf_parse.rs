//! Fuzz `gguf::parse`: any bytes must give `Ok` or `Err`, never a panic, an out-of-bounds read
//! or an allocation sized by an unchecked length. When a file parses, everything the reader
//! promises about it is checked too: tensor data ranges lie inside the input and the typed
//! accessors work.
#![no_main]

use ggml_compat::gguf::parse;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(header) = parse(data) else { return };
    assert!(matches!(header.version, 2 | 3));
    assert!(header.alignment.is_power_of_two());
    for t in &header.tensors {
        let start = header.data_offset + t.offset;
        let end = start + t.size;
        assert!(end <= data.len() as u64, "tensor {} out of bounds", t.name);
        assert_eq!(t.size, t.n_rows() * t.row_bytes());
    }
    for (key, value) in &header.metadata {
        assert!(header.get(key).is_some());
        let _ = (
            value.as_u64(),
            value.as_i64(),
            value.as_f32(),
            value.to_string(),
        );
    }
});
