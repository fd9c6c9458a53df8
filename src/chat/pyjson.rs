//! `tojson` as Hugging Face transformers defines it for chat templates: Python's
//! `json.dumps(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False)` — not
//! jinja2's HTML-escaping `tojson`. Byte-for-byte Python formatting: `", "`/`": "` separators
//! (`","` when indenting), `repr()` floats, `NaN`/`Infinity`, `\u00XX` control escapes.

use minijinja::value::{Kwargs, Rest, ValueKind};
use minijinja::{Error, ErrorKind, Value};

/// Options of Python's `json.dumps` that transformers' `tojson` exposes.
#[derive(Clone, Debug, Default)]
pub struct DumpOptions {
    pub ensure_ascii: bool,
    /// `None`: one line. `Some(s)`: newline + `s` repeated per nesting level.
    pub indent: Option<String>,
    /// `(item_separator, key_separator)`; defaults depend on `indent` as in Python.
    pub separators: Option<(String, String)>,
    pub sort_keys: bool,
}

/// The `tojson` filter: `value | tojson(ensure_ascii=False, indent=None, separators=None,
/// sort_keys=False)`, arguments positional or by keyword (transformers `tojson`).
pub fn tojson_filter(value: &Value, args: Rest<Value>, kwargs: Kwargs) -> Result<String, Error> {
    const NAMES: [&str; 4] = ["ensure_ascii", "indent", "separators", "sort_keys"];
    if args.len() > NAMES.len() {
        return Err(Error::new(
            ErrorKind::TooManyArguments,
            "tojson takes at most 4 arguments",
        ));
    }
    let arg = |i: usize| -> Result<Option<Value>, Error> {
        if let Some(v) = args.get(i) {
            return Ok(Some(v.clone()));
        }
        if kwargs.has(NAMES[i]) {
            return Ok(Some(kwargs.get::<Value>(NAMES[i])?));
        }
        Ok(None)
    };
    let mut opts = DumpOptions::default();
    if let Some(v) = arg(0)? {
        opts.ensure_ascii = v.is_true();
    }
    if let Some(v) = arg(1)? {
        opts.indent = match v.kind() {
            ValueKind::None | ValueKind::Undefined => None,
            ValueKind::String => Some(v.as_str().unwrap_or_default().to_string()),
            ValueKind::Number => {
                let n = v.as_i64().ok_or_else(|| {
                    Error::new(ErrorKind::InvalidOperation, "tojson: indent must be an int")
                })?;
                Some(" ".repeat(usize::try_from(n).unwrap_or(0)))
            }
            _ => {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    "tojson: indent must be an int, a string or None",
                ))
            }
        };
    }
    if let Some(v) = arg(2)? {
        if !v.is_none() && !v.is_undefined() {
            let item = v.get_item_by_index(0)?;
            let key = v.get_item_by_index(1)?;
            match (item.as_str(), key.as_str()) {
                (Some(i), Some(k)) => opts.separators = Some((i.to_string(), k.to_string())),
                _ => {
                    return Err(Error::new(
                        ErrorKind::InvalidOperation,
                        "tojson: separators must be a pair of strings",
                    ))
                }
            }
        }
    }
    if let Some(v) = arg(3)? {
        opts.sort_keys = v.is_true();
    }
    kwargs.assert_all_used()?;
    dumps(value, &opts)
}

/// Python `json.dumps(value, **opts)`.
pub fn dumps(value: &Value, opts: &DumpOptions) -> Result<String, Error> {
    let (item_sep, key_sep) = match (&opts.separators, &opts.indent) {
        (Some((i, k)), _) => (i.as_str(), k.as_str()),
        (None, None) => (", ", ": "),
        (None, Some(_)) => (",", ": "),
    };
    let mut out = String::new();
    let mut w = Writer {
        out: &mut out,
        opts,
        item_sep,
        key_sep,
    };
    w.value(value, 0)?;
    Ok(out)
}

struct Writer<'a> {
    out: &'a mut String,
    opts: &'a DumpOptions,
    item_sep: &'a str,
    key_sep: &'a str,
}

fn not_serializable(v: &Value) -> Error {
    Error::new(
        ErrorKind::InvalidOperation,
        format!(
            "tojson: object of type {} is not JSON serializable",
            v.kind()
        ),
    )
}

impl Writer<'_> {
    fn newline(&mut self, level: usize) {
        if let Some(indent) = &self.opts.indent {
            self.out.push('\n');
            for _ in 0..level {
                self.out.push_str(indent);
            }
        }
    }

    fn value(&mut self, v: &Value, level: usize) -> Result<(), Error> {
        match v.kind() {
            ValueKind::None => self.out.push_str("null"),
            ValueKind::Bool => self
                .out
                .push_str(if v.is_true() { "true" } else { "false" }),
            ValueKind::Number => self.out.push_str(&number(v)?),
            ValueKind::String => self.string(v.as_str().unwrap_or_default()),
            ValueKind::Seq | ValueKind::Iterable => {
                let items: Vec<Value> = v.try_iter()?.collect();
                self.seq(&items, level)?;
            }
            ValueKind::Map => self.map(v, level)?,
            _ => return Err(not_serializable(v)),
        }
        Ok(())
    }

    fn seq(&mut self, items: &[Value], level: usize) -> Result<(), Error> {
        if items.is_empty() {
            self.out.push_str("[]");
            return Ok(());
        }
        self.out.push('[');
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                self.out.push_str(self.item_sep);
            }
            self.newline(level + 1);
            self.value(item, level + 1)?;
        }
        self.newline(level);
        self.out.push(']');
        Ok(())
    }

    fn map(&mut self, v: &Value, level: usize) -> Result<(), Error> {
        let mut entries = Vec::new();
        for key in v.try_iter()? {
            let value = v.get_item(&key)?;
            entries.push((key_string(&key)?, value));
        }
        if entries.is_empty() {
            self.out.push_str("{}");
            return Ok(());
        }
        if self.opts.sort_keys {
            entries.sort_by(|a, b| a.0.cmp(&b.0));
        }
        self.out.push('{');
        for (i, (key, value)) in entries.iter().enumerate() {
            if i > 0 {
                self.out.push_str(self.item_sep);
            }
            self.newline(level + 1);
            self.string(key);
            self.out.push_str(self.key_sep);
            self.value(value, level + 1)?;
        }
        self.newline(level);
        self.out.push('}');
        Ok(())
    }

    /// Python `json.encoder.py_encode_basestring(_ascii)`.
    fn string(&mut self, s: &str) {
        self.out.push('"');
        for c in s.chars() {
            match c {
                '"' => self.out.push_str("\\\""),
                '\\' => self.out.push_str("\\\\"),
                '\n' => self.out.push_str("\\n"),
                '\r' => self.out.push_str("\\r"),
                '\t' => self.out.push_str("\\t"),
                '\u{8}' => self.out.push_str("\\b"),
                '\u{c}' => self.out.push_str("\\f"),
                c if (c as u32) < 0x20 || (self.opts.ensure_ascii && !c.is_ascii()) => {
                    let mut units = [0u16; 2];
                    for unit in c.encode_utf16(&mut units) {
                        self.out.push_str(&format!("\\u{unit:04x}"));
                    }
                }
                c => self.out.push(c),
            }
        }
        self.out.push('"');
    }
}

/// Python converts dict keys that are str, int, float, bool or None to strings.
fn key_string(key: &Value) -> Result<String, Error> {
    match key.kind() {
        ValueKind::String => Ok(key.as_str().unwrap_or_default().to_string()),
        ValueKind::Number => number(key),
        ValueKind::Bool => Ok(if key.is_true() { "true" } else { "false" }.to_string()),
        ValueKind::None => Ok("null".to_string()),
        _ => Err(Error::new(
            ErrorKind::InvalidOperation,
            format!(
                "tojson: keys must be str, int, float, bool or None, not {}",
                key.kind()
            ),
        )),
    }
}

fn number(v: &Value) -> Result<String, Error> {
    if v.is_integer() {
        if let Ok(i) = i128::try_from(v.clone()) {
            return Ok(i.to_string());
        }
    }
    let f = f64::try_from(v.clone()).map_err(|_| not_serializable(v))?;
    Ok(python_float_repr(f))
}

/// Python `float.__repr__` (and so `json.dumps` of a float): shortest round-trip digits,
/// positional when the decimal exponent is in `-4..16`, else `d.ddde+XX`.
pub fn python_float_repr(x: f64) -> String {
    if x.is_nan() {
        return "NaN".to_string();
    }
    if x.is_infinite() {
        return if x > 0.0 { "Infinity" } else { "-Infinity" }.to_string();
    }
    // Rust's `{:e}` prints the same shortest round-trip digits Python uses.
    let sci = format!("{:e}", x.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(|c| c.is_ascii_digit()).collect();
    let sign = if x.is_sign_negative() { "-" } else { "" };
    if !(-4..16).contains(&exp) {
        let (first, rest) = digits.split_at(1);
        let frac = if rest.is_empty() {
            String::new()
        } else {
            format!(".{rest}")
        };
        let esign = if exp < 0 { '-' } else { '+' };
        return format!("{sign}{first}{frac}e{esign}{:02}", exp.unsigned_abs());
    }
    let point = exp + 1; // digits before the decimal point
    if point <= 0 {
        let zeros = "0".repeat(point.unsigned_abs() as usize);
        format!("{sign}0.{zeros}{digits}")
    } else {
        let point = point as usize;
        if digits.len() <= point {
            let zeros = "0".repeat(point - digits.len());
            format!("{sign}{digits}{zeros}.0")
        } else {
            format!("{sign}{}.{}", &digits[..point], &digits[point..])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_repr_matches_python() {
        // Each right-hand side is what CPython 3.11 prints for repr(left).
        let cases: [(f64, &str); 14] = [
            (1.0, "1.0"),
            (0.1, "0.1"),
            (-2.5, "-2.5"),
            (1e16, "1e+16"),
            (1.5e16, "1.5e+16"),
            (1e15, "1000000000000000.0"),
            (123456789.125, "123456789.125"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.25e-7, "1.25e-07"),
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (1e100, "1e+100"),
            (f64::INFINITY, "Infinity"),
        ];
        for (x, want) in cases {
            assert_eq!(python_float_repr(x), want, "repr({x:?})");
        }
    }

    #[test]
    fn dumps_matches_python_formatting() {
        let v = Value::from_pairs([
            ("name", Value::from("get_weather")),
            ("n", Value::from(3)),
            ("x", Value::from(0.5)),
            (
                "tags",
                Value::from(vec![Value::from("a\"b"), Value::from(())]),
            ),
            ("text", Value::from("é<&>\n\u{1}")),
            ("empty", Value::from(Vec::<Value>::new())),
        ]);
        let one_line = dumps(&v, &DumpOptions::default()).unwrap();
        assert_eq!(
            one_line,
            "{\"name\": \"get_weather\", \"n\": 3, \"x\": 0.5, \"tags\": [\"a\\\"b\", null], \
             \"text\": \"é<&>\\n\\u0001\", \"empty\": []}"
        );
        let indented = dumps(
            &Value::from_pairs([("a", Value::from(vec![1, 2]))]),
            &DumpOptions {
                indent: Some("  ".into()),
                ..DumpOptions::default()
            },
        )
        .unwrap();
        assert_eq!(indented, "{\n  \"a\": [\n    1,\n    2\n  ]\n}");
        let ascii = dumps(
            &Value::from("é😀"),
            &DumpOptions {
                ensure_ascii: true,
                ..DumpOptions::default()
            },
        )
        .unwrap();
        assert_eq!(ascii, "\"\\u00e9\\ud83d\\ude00\"");
    }
}
