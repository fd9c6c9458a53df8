//! Built-in chat templates for models whose GGUF has no `tokenizer.chat_template`, and the rule
//! that picks one (llama.cpp falls back to ChatML the same way when a model ships none).

use super::template::{ChatTemplate, TemplateError};

/// Names accepted by [`ChatTemplate::builtin`].
pub const NAMES: [&str; 3] = ["chatml", "gemma", "llama3"];

/// ChatML (`<|im_start|>role\n...<|im_end|>\n`), no default system prompt: llama.cpp's
/// `LLM_CHAT_TEMPLATE_CHATML`.
const CHATML: &str = "\
{%- for message in messages -%}
{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}
{{- '<|im_start|>assistant\\n' -}}
{%- endif -%}";

/// Gemma 3 instruct format (the text-only part of the template google/gemma-3-*-it ship):
/// `<bos>`, a system message folded into the first user turn, `assistant` renamed `model`,
/// contents trimmed, roles must alternate.
const GEMMA: &str = "\
{{- bos_token -}}
{%- if messages and messages[0]['role'] == 'system' -%}
  {%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}
  {%- set loop_messages = messages[1:] -%}
{%- else -%}
  {%- set first_user_prefix = '' -%}
  {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
  {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
    {{- raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') -}}
  {%- endif -%}
  {%- if message['role'] == 'assistant' -%}
    {%- set role = 'model' -%}
  {%- else -%}
    {%- set role = message['role'] -%}
  {%- endif -%}
  {{- '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else '') -}}
  {{- message['content'] | trim -}}
  {{- '<end_of_turn>\\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}
  {{- '<start_of_turn>model\\n' -}}
{%- endif -%}";

/// Llama 3 instruct format (meta-llama/Meta-Llama-3-8B-Instruct's template).
const LLAMA3: &str = "\
{{- bos_token -}}
{%- for message in messages -%}
{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' -}}
{{- message['content'] | trim -}}
{{- '<|eot_id|>' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}
{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}
{%- endif -%}";

/// `(template source, bos text, eos text)` of a built-in.
fn lookup(name: &str) -> Option<(&'static str, &'static str, &'static str)> {
    match name {
        "chatml" => Some((CHATML, "", "<|im_end|>")),
        "gemma" => Some((GEMMA, "<bos>", "<eos>")),
        "llama3" => Some((LLAMA3, "<|begin_of_text|>", "<|eot_id|>")),
        _ => None,
    }
}

impl ChatTemplate {
    /// A built-in template (`chatml`, `gemma`, `llama3`) with its family's usual BOS/EOS texts
    /// (`<bos>`/`<eos>` for Gemma, `<|begin_of_text|>`/`<|eot_id|>` for Llama 3, none/`<|im_end|>`
    /// for ChatML). Errors name it `builtin:NAME`.
    pub fn builtin(name: &str) -> Result<Self, TemplateError> {
        let (_, bos, eos) =
            lookup(name).ok_or_else(|| TemplateError::UnknownBuiltin(name.to_string()))?;
        Self::builtin_with_tokens(name, bos, eos)
    }

    /// A built-in template rendered with the model's own BOS/EOS texts.
    pub fn builtin_with_tokens(name: &str, bos: &str, eos: &str) -> Result<Self, TemplateError> {
        let (source, _, _) =
            lookup(name).ok_or_else(|| TemplateError::UnknownBuiltin(name.to_string()))?;
        Self::with_name(&format!("builtin:{name}"), source, bos, eos)
    }
}

/// The template chosen for a model without one, and what to tell the user about it.
#[derive(Debug, Clone)]
pub struct Fallback {
    /// Which built-in was chosen (one of [`NAMES`]).
    pub name: &'static str,
    pub template: ChatTemplate,
    /// One line for the CLI to show, e.g. "model has no tokenizer.chat_template; using the
    /// built-in `gemma` template (chosen from 'gemma3')".
    pub notice: String,
}

/// Picks a built-in template from a hint — the GGUF's `general.architecture`, `general.name`,
/// `general.basename` or the file name: `gemma*` → `gemma`, `llama3`/`llama-3`/`llama 3` →
/// `llama3`, anything else → `chatml` (llama.cpp's own default when a model has no template).
pub fn fallback_for(arch_or_hint: &str) -> Fallback {
    let hint = arch_or_hint.to_ascii_lowercase();
    let name = if hint.contains("gemma") {
        "gemma"
    } else if ["llama3", "llama-3", "llama 3", "llama_3"]
        .iter()
        .any(|p| hint.contains(p))
    {
        "llama3"
    } else {
        "chatml"
    };
    let reason = if name == "chatml" {
        format!("no family recognised in '{arch_or_hint}'")
    } else {
        format!("chosen from '{arch_or_hint}'")
    };
    Fallback {
        name,
        // The built-in sources are constants covered by tests; a failure here is a kiln bug.
        template: ChatTemplate::builtin(name).expect("built-in chat templates compile"),
        notice: format!(
            "model has no tokenizer.chat_template; using the built-in `{name}` template ({reason}); \
             pass a template explicitly if the replies look wrong"
        ),
    }
}
