//! Chat prompt formatting from a GGUF's `tokenizer.chat_template` (a Jinja template), rendered
//! the way Hugging Face transformers' `apply_chat_template` renders it.
//!
//! transformers (`utils/chat_template_utils.py`, `_compile_jinja_template`) compiles the template
//! in a jinja2 `ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
//! extensions=[AssistantTracker, loopcontrols])` with no autoescaping and jinja2's default
//! `keep_trailing_newline=False`, adds the globals `raise_exception(msg)` and
//! `strftime_now(fmt)` and replaces the `tojson` filter by `json.dumps(..., ensure_ascii=False)`.
//! It renders with `messages`, `tools=None`, `documents=None`, `add_generation_prompt` and the
//! tokenizer's special tokens (`bos_token`, `eos_token`, ...). We mirror each of those with
//! minijinja; Python string/dict methods (`.strip()`, `.startswith()`, `.split()`, `.items()`,
//! ...) come from minijinja-contrib's pycompat layer, and transformers' `{% generation %}` block
//! (which only marks assistant spans for training masks) renders its body unchanged.

use std::fmt::Write as _;

use minijinja::syntax::SyntaxConfig;
use minijinja::value::Rest;
use minijinja::{AutoEscape, Environment, Error, ErrorKind, UndefinedBehavior, Value};

use super::pyjson;

/// The name templates read from a GGUF get in error messages.
pub const GGUF_TEMPLATE_NAME: &str = "tokenizer.chat_template";

/// One chat turn: `{"role": ..., "content": ...}` in the template's `messages`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    /// A message with any role (`system`, `user`, `assistant`, `tool`, ...).
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
    /// `{"role": "system", ...}`.
    pub fn system(content: impl Into<String>) -> Self {
        Self::new("system", content)
    }
    /// `{"role": "user", ...}`.
    pub fn user(content: impl Into<String>) -> Self {
        Self::new("user", content)
    }
    /// `{"role": "assistant", ...}`.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new("assistant", content)
    }
}

/// Why a chat template could not be compiled or rendered. Every variant names the template.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// The template text is not valid Jinja.
    #[error("chat template `{name}`: syntax error{}: {message}", at_line(*.line))]
    Syntax {
        name: String,
        line: Option<usize>,
        message: String,
    },
    /// The template called `raise_exception(message)`, i.e. it refuses these messages
    /// (e.g. roles that do not alternate).
    #[error("chat template `{name}` rejected the conversation: {message}")]
    Raised { name: String, message: String },
    /// Rendering failed for another reason (unknown filter, bad operand, ...).
    #[error("chat template `{name}` failed to render{}: {message}", at_line(*.line))]
    Render {
        name: String,
        line: Option<usize>,
        message: String,
    },
    /// [`ChatTemplate::builtin`] was asked for a name it does not know.
    #[error("unknown built-in chat template `{0}` (known: {known})", known = super::builtin::NAMES.join(", "))]
    UnknownBuiltin(String),
}

fn at_line(line: Option<usize>) -> String {
    line.map(|l| format!(" at line {l}")).unwrap_or_default()
}

/// The payload of a `raise_exception(msg)` call, carried as the minijinja error's source so
/// that rendering can tell a deliberate refusal from a template bug.
#[derive(Debug)]
struct Raised(String);

impl std::fmt::Display for Raised {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Raised {}

/// A compiled chat template plus the special tokens it is rendered with.
#[derive(Debug, Clone)]
pub struct ChatTemplate {
    name: String,
    source: String,
    bos: String,
    eos: String,
    env: Environment<'static>,
}

impl ChatTemplate {
    /// Compiles a GGUF `tokenizer.chat_template` (errors name it `tokenizer.chat_template`);
    /// `bos`/`eos` are the texts of the model's BOS/EOS tokens (`bos_token`/`eos_token`).
    pub fn new(source: &str, bos: &str, eos: &str) -> Result<Self, TemplateError> {
        Self::with_name(GGUF_TEMPLATE_NAME, source, bos, eos)
    }

    /// [`ChatTemplate::new`] with the name to use in error messages (e.g. a file path).
    pub fn with_name(
        name: &str,
        source: &str,
        bos: &str,
        eos: &str,
    ) -> Result<Self, TemplateError> {
        let mut env = Environment::new();
        let syntax = SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .keep_trailing_newline(false)
            .build()
            .map_err(|e| convert_error(name, e))?;
        env.set_syntax(syntax);
        env.set_auto_escape_callback(|_| AutoEscape::None);
        env.set_undefined_behavior(UndefinedBehavior::Lenient);
        env.set_unknown_method_callback(python_methods);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", pyjson::tojson_filter);
        env.add_template_owned(name.to_string(), strip_generation_tags(source))
            .map_err(|e| convert_error(name, e))?;
        Ok(Self {
            name: name.to_string(),
            source: source.to_string(),
            bos: bos.to_string(),
            eos: eos.to_string(),
            env,
        })
    }

    /// The name errors use (`tokenizer.chat_template`, `builtin:gemma`, ...).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The template text as given.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The `bos_token` text. A template that emits it puts it in the rendered text, as
    /// transformers does: tokenize that text without adding another BOS.
    pub fn bos(&self) -> &str {
        &self.bos
    }

    /// The `eos_token` text.
    pub fn eos(&self) -> &str {
        &self.eos
    }

    /// Renders `messages` (transformers `apply_chat_template(messages, tokenize=False,
    /// add_generation_prompt=...)`).
    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<String, TemplateError> {
        let messages: Vec<Value> = messages
            .iter()
            .map(|m| {
                Value::from_pairs([
                    ("role", Value::from(m.role.as_str())),
                    ("content", Value::from(m.content.as_str())),
                ])
            })
            .collect();
        let ctx = Value::from_pairs([
            ("messages", Value::from(messages)),
            ("tools", Value::from(())),
            ("documents", Value::from(())),
            ("add_generation_prompt", Value::from(add_generation_prompt)),
            ("bos_token", Value::from(self.bos.as_str())),
            ("eos_token", Value::from(self.eos.as_str())),
        ]);
        let tmpl = self
            .env
            .get_template(&self.name)
            .map_err(|e| convert_error(&self.name, e))?;
        tmpl.render(ctx).map_err(|e| convert_error(&self.name, e))
    }
}

/// Python `str`/`dict`/`list` methods: minijinja-contrib's pycompat, except `str.title()`,
/// which pycompat capitalises only after whitespace while Python starts a word after any
/// uncased character (`'"quotes"'.title() == '"Quotes"'`).
fn python_methods(
    state: &mut minijinja::State,
    value: &Value,
    method: &str,
    args: &[Value],
) -> Result<Value, Error> {
    if method == "title" && args.is_empty() {
        if let Some(s) = value.as_str() {
            return Ok(Value::from(python_title(s)));
        }
    }
    minijinja_contrib::pycompat::unknown_method_callback(state, value, method, args)
}

/// Python `str.title()`: title-case the first cased character after an uncased one, lower-case
/// the rest.
fn python_title(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut prev_cased = false;
    for c in s.chars() {
        let cased = c.is_lowercase() || c.is_uppercase();
        if prev_cased {
            out.extend(c.to_lowercase());
        } else {
            out.extend(c.to_uppercase());
        }
        prev_cased = cased;
    }
    out
}

/// transformers' `raise_exception(message)`: aborts rendering with `message`.
fn raise_exception(message: Rest<Value>) -> Result<Value, Error> {
    let text = match message.first() {
        Some(v) => v
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| v.to_string()),
        None => String::new(),
    };
    Err(Error::new(ErrorKind::InvalidOperation, "raise_exception called").with_source(Raised(text)))
}

/// transformers' `strftime_now(format)`: `datetime.now().strftime(format)`, local time.
fn strftime_now(format: &str) -> Result<String, Error> {
    let mut out = String::new();
    write!(out, "{}", chrono::Local::now().format(format)).map_err(|_| {
        Error::new(
            ErrorKind::InvalidOperation,
            format!("strftime_now: invalid format string {format:?}"),
        )
    })?;
    Ok(out)
}

/// Finds a `raise_exception` payload anywhere in the error's source chain.
fn raised_message(err: &Error) -> Option<String> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(r) = e.downcast_ref::<Raised>() {
            return Some(r.0.clone());
        }
        cur = e.source();
    }
    None
}

fn convert_error(name: &str, err: Error) -> TemplateError {
    if let Some(message) = raised_message(&err) {
        return TemplateError::Raised {
            name: name.to_string(),
            message,
        };
    }
    let message = match err.detail() {
        Some(d) => format!("{}: {d}", err.kind()),
        None => err.kind().to_string(),
    };
    let line = err.line();
    match err.kind() {
        ErrorKind::SyntaxError | ErrorKind::BadEscape => TemplateError::Syntax {
            name: name.to_string(),
            line,
            message,
        },
        _ => TemplateError::Render {
            name: name.to_string(),
            line,
            message,
        },
    }
}

/// Turns transformers' `{% generation %}`/`{% endgeneration %}` tags (its AssistantTracker
/// extension, a no-op for plain rendering) into `{% if true %}`/`{% endif %}`, keeping any
/// `-`/`+` whitespace control so the output is unchanged.
fn strip_generation_tags(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(start) = rest.find("{%") {
        out.push_str(&rest[..start]);
        let tag = &rest[start..];
        let Some(end) = tag.find("%}") else {
            out.push_str(tag);
            return out;
        };
        let inner = &tag[2..end];
        let (open_ctl, body) = split_ctl_prefix(inner);
        let (body, close_ctl) = split_ctl_suffix(body);
        let replacement = match body.trim() {
            "generation" => Some("if true"),
            "endgeneration" => Some("endif"),
            _ => None,
        };
        match replacement {
            Some(r) => {
                let _ = write!(out, "{{%{open_ctl} {r} {close_ctl}%}}");
            }
            None => out.push_str(&tag[..end + 2]),
        }
        rest = &tag[end + 2..];
    }
    out.push_str(rest);
    out
}

fn split_ctl_prefix(s: &str) -> (&str, &str) {
    match s.chars().next() {
        Some(c @ ('-' | '+')) => s.split_at(c.len_utf8()),
        _ => ("", s),
    }
}

fn split_ctl_suffix(s: &str) -> (&str, &str) {
    match s.chars().last() {
        Some('-' | '+') => s.split_at(s.len() - 1),
        _ => (s, ""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_tags_become_transparent_blocks() {
        assert_eq!(
            strip_generation_tags("a{%- generation -%}b{% endgeneration %}c{{ x }}"),
            "a{%- if true -%}b{% endif %}c{{ x }}"
        );
        assert_eq!(
            strip_generation_tags("{% if x %}{% endif %}"),
            "{% if x %}{% endif %}"
        );
        assert_eq!(strip_generation_tags("{% unterminated"), "{% unterminated");
    }
}
