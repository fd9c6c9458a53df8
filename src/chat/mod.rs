//! Chat: turning a conversation into the prompt text a model was trained on.
//!
//! - [`template`]: a GGUF `tokenizer.chat_template` rendered like transformers'
//!   `apply_chat_template` ([`ChatTemplate`], [`Message`], [`TemplateError`]).
//! - [`builtin`]: ChatML, Gemma and Llama 3 templates for files without one, and
//!   [`fallback_for`] to pick among them.
//! - [`session`]: a conversation with KV-cache reuse between turns; [`repl`]: the terminal UI.
//! - `pyjson`: the Python `json.dumps` that transformers' `tojson` filter is.

pub mod builtin;
mod pyjson;
pub mod repl;
pub mod session;
pub mod template;

pub use builtin::{fallback_for, Fallback};
pub use template::{ChatTemplate, Message, TemplateError};
