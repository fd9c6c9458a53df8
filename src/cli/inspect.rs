//! `kiln inspect FILE.gguf [--json]`: what is in a GGUF file, like gguf-py's `gguf-dump`.
//!
//! Text output: the header, every metadata key (long strings and arrays summarized), a tensor
//! table, and totals per type and overall. `--json` prints the same as one JSON object.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::PathBuf;

use anyhow::Result;
use ggml_compat::gguf::{GgufFile, Header, TensorInfo, Value};
use serde_json::{json, Value as Json};

/// Arguments of `kiln inspect`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The GGUF file to describe.
    pub file: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Include every element of long arrays (e.g. the whole vocabulary) instead of the first few.
    #[arg(long)]
    pub full_arrays: bool,
}

/// Array elements shown before "… N more".
const ARRAY_HEAD: usize = 8;
/// Characters of a string shown before it is cut.
const STRING_HEAD: usize = 72;

/// Open `args.file` and print its description to stdout. A closed pipe is not an error.
pub fn run(args: &Args) -> Result<()> {
    let file = GgufFile::open(&args.file)?;
    let out = io::stdout().lock();
    let result = if args.json {
        write_json(out, &file, args.full_arrays)
    } else {
        write_text(out, &file, args.full_arrays)
    };
    match result {
        // `kiln inspect x.gguf | head` is not an error.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// Parameter, byte and tensor counts, overall or for one type.
#[derive(Default, Clone, Copy)]
struct Totals {
    tensors: u64,
    params: u64,
    bytes: u64,
}

impl Totals {
    fn add(&mut self, t: &TensorInfo) {
        self.tensors += 1;
        self.params = self.params.saturating_add(t.n_elements());
        self.bytes = self.bytes.saturating_add(t.size);
    }

    fn bits_per_weight(&self) -> f64 {
        if self.params == 0 {
            0.0
        } else {
            self.bytes as f64 * 8.0 / self.params as f64
        }
    }
}

fn totals(h: &Header) -> (Totals, BTreeMap<&'static str, Totals>) {
    let mut all = Totals::default();
    let mut by_type = BTreeMap::new();
    for t in &h.tensors {
        all.add(t);
        by_type
            .entry(t.ty.name())
            .or_insert_with(Totals::default)
            .add(t);
    }
    (all, by_type)
}

/// `str`, `u32`, `arr[str; 49152]`, `arr[arr[i16; ...]; 2]`.
fn type_label(v: &Value) -> String {
    match v {
        Value::Array(a) => {
            let elem = match a.values.first() {
                Some(first @ Value::Array(_)) => type_label(first),
                _ => a.elem.to_string(),
            };
            format!("arr[{elem}; {}]", a.values.len())
        }
        _ => v.value_type().to_string(),
    }
}

/// A value on one line: strings quoted and cut after `STRING_HEAD` characters, arrays showing
/// their first `ARRAY_HEAD` elements unless `full`.
fn summarize(v: &Value, full: bool) -> String {
    match v {
        Value::String(s) => {
            let n_chars = s.chars().count();
            if full || n_chars <= STRING_HEAD {
                format!("{s:?}")
            } else {
                let head: String = s.chars().take(STRING_HEAD).collect();
                format!("{head:?}… ({} bytes)", s.len())
            }
        }
        Value::Array(a) => {
            let shown = if full {
                a.values.len()
            } else {
                a.values.len().min(ARRAY_HEAD)
            };
            let mut parts: Vec<String> = a.values[..shown]
                .iter()
                .map(|v| summarize(v, full))
                .collect();
            if shown < a.values.len() {
                parts.push(format!("… {} more", a.values.len() - shown));
            }
            format!("[{}]", parts.join(", "))
        }
        other => other.to_string(),
    }
}

fn shape(t: &TensorInfo) -> String {
    let dims: Vec<String> = t.dims.iter().map(u64::to_string).collect();
    dims.join(" x ")
}

fn write_text(mut w: impl Write, file: &GgufFile, full: bool) -> io::Result<()> {
    let h = file.header();
    writeln!(w, "file:         {}", file.path().display())?;
    writeln!(w, "size:         {} bytes", file.bytes().len())?;
    writeln!(w, "version:      {}", h.version)?;
    writeln!(w, "alignment:    {}", h.alignment)?;
    writeln!(w, "data offset:  {}", h.data_offset)?;
    writeln!(w, "metadata:     {} keys", h.metadata.len())?;
    writeln!(w, "tensors:      {}", h.tensors.len())?;

    writeln!(w, "\nmetadata:")?;
    let key_w = h.metadata.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let labels: Vec<String> = h.metadata.iter().map(|(_, v)| type_label(v)).collect();
    let type_w = labels.iter().map(String::len).max().unwrap_or(0);
    for ((key, value), label) in h.metadata.iter().zip(&labels) {
        writeln!(
            w,
            "  {key:key_w$}  {label:type_w$}  {}",
            summarize(value, full)
        )?;
    }

    writeln!(w, "\ntensors:")?;
    let rows: Vec<[String; 7]> = h
        .tensors
        .iter()
        .enumerate()
        .map(|(i, t)| {
            [
                i.to_string(),
                t.name.clone(),
                t.ty.name().to_owned(),
                shape(t),
                t.n_elements().to_string(),
                t.size.to_string(),
                t.offset.to_string(),
            ]
        })
        .collect();
    let header = ["#", "name", "type", "shape", "params", "bytes", "offset"];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; 7]| {
        let mut s = String::from(" ");
        for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
            // Text columns left-aligned, numbers right-aligned.
            let pad = width.saturating_sub(cell.chars().count());
            s.push(' ');
            if matches!(i, 1..=3) {
                s.push_str(cell);
                s.push_str(&" ".repeat(pad));
            } else {
                s.push_str(&" ".repeat(pad));
                s.push_str(cell);
            }
        }
        s.trim_end().to_owned()
    };
    writeln!(w, "{}", line(header))?;
    for row in &rows {
        writeln!(w, "{}", line(row.each_ref().map(String::as_str)))?;
    }

    let (all, by_type) = totals(h);
    writeln!(w, "\ntotals by type:")?;
    for (ty, t) in &by_type {
        writeln!(
            w,
            "  {ty:8} {:4} tensors  {:>12} params  {:>12} bytes  {:6.3} bits/weight",
            t.tensors,
            t.params,
            t.bytes,
            t.bits_per_weight()
        )?;
    }
    writeln!(
        w,
        "  {:8} {:4} tensors  {:>12} params  {:>12} bytes  {:6.3} bits/weight",
        "all",
        all.tensors,
        all.params,
        all.bytes,
        all.bits_per_weight()
    )?;
    w.flush()
}

/// A value as JSON. Arrays become `{"elem", "len", "values"}` with all values when `full`,
/// else the first `ARRAY_HEAD` (and `"truncated": true`). Non-finite floats become null.
fn value_json(v: &Value, full: bool) -> Json {
    match v {
        Value::U8(x) => json!(x),
        Value::I8(x) => json!(x),
        Value::U16(x) => json!(x),
        Value::I16(x) => json!(x),
        Value::U32(x) => json!(x),
        Value::I32(x) => json!(x),
        Value::U64(x) => json!(x),
        Value::I64(x) => json!(x),
        Value::F32(x) => json!(x),
        Value::F64(x) => json!(x),
        Value::Bool(x) => json!(x),
        Value::String(s) => json!(s),
        Value::Array(a) => {
            let shown = if full {
                a.values.len()
            } else {
                a.values.len().min(ARRAY_HEAD)
            };
            let values: Vec<Json> = a.values[..shown]
                .iter()
                .map(|v| value_json(v, full))
                .collect();
            json!({
                "elem": a.elem.name(),
                "len": a.values.len(),
                "values": values,
                "truncated": shown < a.values.len(),
            })
        }
    }
}

fn write_json(mut w: impl Write, file: &GgufFile, full: bool) -> io::Result<()> {
    let h = file.header();
    let (all, by_type) = totals(h);
    let totals_json = |t: &Totals| {
        json!({
            "tensors": t.tensors,
            "params": t.params,
            "bytes": t.bytes,
            "bits_per_weight": t.bits_per_weight(),
        })
    };
    let doc = json!({
        "path": file.path().display().to_string(),
        "file_size": file.bytes().len(),
        "version": h.version,
        "alignment": h.alignment,
        "data_offset": h.data_offset,
        "metadata": h.metadata.iter().map(|(k, v)| json!({
            "key": k,
            "type": v.value_type().name(),
            "value": value_json(v, full),
        })).collect::<Vec<_>>(),
        "tensors": h.tensors.iter().map(|t| json!({
            "name": t.name,
            "type": t.ty.name(),
            "shape": t.dims,
            "params": t.n_elements(),
            "bytes": t.size,
            "offset": t.offset,
        })).collect::<Vec<_>>(),
        "totals": totals_json(&all),
        "totals_by_type": by_type.iter().map(|(ty, t)| (ty.to_string(), totals_json(t))).collect::<serde_json::Map<_, _>>(),
    });
    serde_json::to_writer_pretty(&mut w, &doc)?;
    writeln!(w)?;
    w.flush()
}
