//! A conversation and the KV cache that goes with it.
//!
//! Each turn renders the *whole* conversation with the chat template, tokenizes it, and compares
//! the tokens with those already in the cache: the cache is truncated to the common prefix and
//! only the rest is evaluated (llama.cpp's server does the same with `n_past`). The end-of-turn
//! tag of the previous answer, which generation stops at without evaluating, is simply part of
//! the new tokens. When the conversation no longer fits, the oldest turns are dropped (the
//! system message is kept) and the caller is told.
//!
//! The model and tokenizer are reached through two small traits, [`Engine`] and [`Codec`], so
//! that the cache logic is testable without a model.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::template::{ChatTemplate, Message, TemplateError};
use crate::model::{Model, ModelError, State};
use crate::sample::{Sampler, SamplerConfig};
use crate::tokenizer::Tokenizer;

/// Prompt tokens evaluated per forward pass; Ctrl-C is honoured between chunks.
const PROMPT_CHUNK: usize = 256;

/// What evaluates tokens: a model plus its KV cache.
pub trait Engine {
    /// Capacity of the cache in positions.
    fn n_ctx(&self) -> usize;
    /// Positions currently in the cache.
    fn cache_len(&self) -> usize;
    /// Forgets positions `n..`.
    fn truncate(&mut self, n: usize);
    /// Evaluates `tokens` at the next positions; returns the logits of the last one.
    fn eval(&mut self, tokens: &[u32]) -> Result<Vec<f32>, ModelError>;
}

/// A [`Model`] with one sequence's state.
pub struct ModelEngine<'m> {
    pub model: &'m Model,
    pub state: State,
}

impl<'m> ModelEngine<'m> {
    /// A fresh cache of `n_ctx` positions for `model`.
    pub fn new(model: &'m Model, n_ctx: usize) -> Self {
        Self {
            model,
            state: model.new_state(n_ctx),
        }
    }
}

impl Engine for ModelEngine<'_> {
    fn n_ctx(&self) -> usize {
        self.state.cache.n_ctx()
    }
    fn cache_len(&self) -> usize {
        self.state.cache.len()
    }
    fn truncate(&mut self, n: usize) {
        self.state.cache.truncate(n)
    }
    fn eval(&mut self, tokens: &[u32]) -> Result<Vec<f32>, ModelError> {
        self.model.forward_last(&mut self.state, tokens)
    }
}

/// Text ↔ tokens for the session.
pub trait Codec {
    /// Tokens of a rendered prompt.
    fn encode_prompt(&self, text: &str) -> Vec<u32>;
    /// The bytes a generated token stands for (control tokens as their text).
    fn piece(&self, id: u32) -> Vec<u8>;
    /// Whether generation stops at `id` (EOS, end of turn, ...).
    fn is_eog(&self, id: u32) -> bool;
}

impl Codec for Tokenizer {
    /// Special tokens written by the template are parsed; no BOS is added unless the model asks
    /// for one and the template did not already write it (transformers tokenizes the rendered
    /// text the same way, avoiding llama.cpp's double-BOS).
    fn encode_prompt(&self, text: &str) -> Vec<u32> {
        let mut ids = self.encode(text, false, true);
        if let (true, Some(bos)) = (self.add_bos(), self.bos()) {
            if ids.first() != Some(&bos) {
                ids.insert(0, bos);
            }
        }
        ids
    }
    fn piece(&self, id: u32) -> Vec<u8> {
        self.token_to_piece(id).to_vec()
    }
    fn is_eog(&self, id: u32) -> bool {
        Tokenizer::is_eog(self, id)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(
        "the conversation needs {tokens} tokens even with every earlier turn dropped, more than \
         the context of {n_ctx} allows; write a shorter message or raise -c"
    )]
    TooLong { tokens: usize, n_ctx: usize },
    #[error("{path}: {why}")]
    File { path: String, why: String },
    #[error("nothing to regenerate: there is no user message yet")]
    NothingToRegen,
}

/// Settings kept with the conversation (and in `/save` files).
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub sampling: SamplerConfig,
    /// Most tokens per answer (`None`: until end of turn or a full context).
    pub n_predict: Option<usize>,
}

/// Why an answer ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// The model wrote an end-of-generation token.
    EndOfTurn,
    /// The stop flag was raised (Ctrl-C).
    Interrupted,
    /// `n_predict` tokens were generated.
    Limit,
    /// The cache is full.
    ContextFull,
}

/// What [`Session::respond`] reports while it works.
#[derive(Debug)]
pub enum Event<'a> {
    /// Something the user should know (turns dropped, answer cut, ...).
    Notice(&'a str),
    /// A generated token, to display as it arrives.
    Token(u32),
}

/// Numbers of the last turn, for `/stats`.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Tokens of the last rendered prompt.
    pub prompt_tokens: usize,
    /// Of those, how many were already in the cache.
    pub prompt_reused: usize,
    /// Of those, how many were evaluated.
    pub prompt_evaluated: usize,
    pub prompt_time: Duration,
    /// Tokens generated in the last answer (the end-of-turn token included).
    pub generated: usize,
    pub gen_time: Duration,
    /// Prompt tokens evaluated since the session began.
    pub total_evaluated: usize,
}

/// An answer.
#[derive(Clone, Debug)]
pub struct Reply {
    pub text: String,
    pub stop: Stop,
}

/// The conversation, the tokens in the engine's cache, the sampler and the last turn's numbers.
pub struct Session {
    template: ChatTemplate,
    messages: Vec<Message>,
    /// Tokens at positions `0..cached.len()` of the engine's cache.
    cached: Vec<u32>,
    settings: Settings,
    sampler: Sampler,
    stats: Stats,
}

impl Session {
    /// An empty conversation (with `system` as its first message if given).
    pub fn new(template: ChatTemplate, settings: Settings, system: Option<String>) -> Self {
        Self {
            template,
            messages: system.into_iter().map(Message::system).collect(),
            cached: Vec::new(),
            sampler: Sampler::new(settings.sampling.clone()),
            settings,
            stats: Stats::default(),
        }
    }

    pub fn messages(&self) -> &[Message] {
        &self.messages
    }
    pub fn settings(&self) -> &Settings {
        &self.settings
    }
    pub fn stats(&self) -> &Stats {
        &self.stats
    }
    pub fn template(&self) -> &ChatTemplate {
        &self.template
    }
    /// The seed the sampler uses.
    pub fn seed(&self) -> u32 {
        self.sampler.seed()
    }
    /// Tokens in the engine's cache, as far as the session knows.
    pub fn cached_tokens(&self) -> &[u32] {
        &self.cached
    }
    /// User messages so far.
    pub fn turns(&self) -> usize {
        self.messages.iter().filter(|m| m.role == "user").count()
    }

    /// The system message, if any.
    pub fn system(&self) -> Option<&str> {
        match self.messages.first() {
            Some(m) if m.role == "system" => Some(&m.content),
            _ => None,
        }
    }

    /// Sets (or with `None` removes) the system message, keeping the rest of the conversation.
    pub fn set_system(&mut self, text: Option<String>) {
        let has = self.system().is_some();
        match (text, has) {
            (Some(t), true) => self.messages[0].content = t,
            (Some(t), false) => self.messages.insert(0, Message::system(t)),
            (None, true) => {
                self.messages.remove(0);
            }
            (None, false) => {}
        }
    }

    /// Forgets every message but the system one. The cache is kept: its system-prompt prefix
    /// is reused by the next turn.
    pub fn clear(&mut self) {
        self.messages.retain(|m| m.role == "system");
    }

    /// Replaces the settings (a new sampler is built).
    pub fn set_settings(&mut self, settings: Settings) {
        self.sampler = Sampler::new(settings.sampling.clone());
        self.settings = settings;
    }

    /// Adds a user message; answer it with [`Session::respond`].
    pub fn push_user(&mut self, text: impl Into<String>) {
        self.messages.push(Message::user(text));
    }

    /// Removes the last answer so that [`Session::respond`] writes it again.
    pub fn prepare_regen(&mut self) -> Result<(), SessionError> {
        while self.messages.last().is_some_and(|m| m.role == "assistant") {
            self.messages.pop();
        }
        match self.messages.last() {
            Some(m) if m.role == "user" => Ok(()),
            _ => Err(SessionError::NothingToRegen),
        }
    }

    /// Answers the conversation's last message: fits the prompt in the context, evaluates what
    /// the cache lacks, and samples until end of turn, `stop`, `n_predict` or a full context.
    /// The answer is appended to the conversation (a partial one too); a turn that produced
    /// nothing (error or interrupted before the first token) is taken back.
    pub fn respond(
        &mut self,
        engine: &mut impl Engine,
        codec: &impl Codec,
        stop: &AtomicBool,
        on_event: &mut dyn FnMut(Event<'_>),
    ) -> Result<Reply, SessionError> {
        let result = self.respond_inner(engine, codec, stop, on_event);
        let produced =
            matches!(&result, Ok(r) if !r.text.is_empty() || r.stop != Stop::Interrupted);
        if !produced && self.messages.last().is_some_and(|m| m.role == "user") {
            self.messages.pop();
        }
        result
    }

    fn respond_inner(
        &mut self,
        engine: &mut impl Engine,
        codec: &impl Codec,
        stop: &AtomicBool,
        on_event: &mut dyn FnMut(Event<'_>),
    ) -> Result<Reply, SessionError> {
        let n_ctx = engine.n_ctx();
        let prompt = self.fit_prompt(codec, n_ctx, on_event)?;
        let t0 = Instant::now();
        let logits = self.sync(engine, &prompt, stop)?;
        self.stats.prompt_time = t0.elapsed();
        self.stats.generated = 0;
        self.stats.gen_time = Duration::ZERO;
        let Some(mut logits) = logits else {
            return Ok(Reply {
                text: String::new(),
                stop: Stop::Interrupted,
            });
        };

        let t1 = Instant::now();
        let mut bytes = Vec::new();
        let why = loop {
            if stop.load(Ordering::Relaxed) {
                break Stop::Interrupted;
            }
            let next = self.sampler.sample(&logits);
            self.sampler.accept(next);
            self.stats.generated += 1;
            if codec.is_eog(next) {
                break Stop::EndOfTurn;
            }
            bytes.extend_from_slice(&codec.piece(next));
            on_event(Event::Token(next));
            if self
                .settings
                .n_predict
                .is_some_and(|n| self.stats.generated >= n)
            {
                break Stop::Limit;
            }
            if self.cached.len() >= n_ctx {
                on_event(Event::Notice(
                    "context full: the answer was cut short (older turns are dropped next turn)",
                ));
                break Stop::ContextFull;
            }
            logits = engine.eval(&[next])?;
            self.cached.push(next);
        };
        self.stats.gen_time = t1.elapsed();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        if !text.is_empty() || why != Stop::Interrupted {
            self.messages.push(Message::assistant(text.clone()));
        }
        Ok(Reply { text, stop: why })
    }

    /// Tokens the answer may take at most when deciding whether to drop old turns.
    fn reserve(&self, n_ctx: usize) -> usize {
        let r = (n_ctx / 4).min(512);
        self.settings.n_predict.map_or(r, |n| n.min(r))
    }

    /// Renders and tokenizes the conversation with the generation prompt, dropping the oldest
    /// turns (never the system message nor the last user message) while the prompt plus room
    /// for an answer exceeds `n_ctx`.
    pub fn fit_prompt(
        &mut self,
        codec: &impl Codec,
        n_ctx: usize,
        on_event: &mut dyn FnMut(Event<'_>),
    ) -> Result<Vec<u32>, SessionError> {
        let reserve = self.reserve(n_ctx);
        let mut dropped = 0;
        let tokens = loop {
            let text = self.template.render(&self.messages, true)?;
            let tokens = codec.encode_prompt(&text);
            if tokens.len() + reserve <= n_ctx {
                break tokens;
            }
            if !self.drop_oldest_turn() {
                if tokens.len() < n_ctx {
                    break tokens; // no room for a long answer, but some
                }
                return Err(SessionError::TooLong {
                    tokens: tokens.len(),
                    n_ctx,
                });
            }
            dropped += 1;
        };
        if dropped > 0 {
            let s = if dropped == 1 { "" } else { "s" };
            on_event(Event::Notice(&format!(
                "context full ({n_ctx} tokens): dropped the {dropped} oldest turn{s} of the conversation"
            )));
        }
        Ok(tokens)
    }

    /// Removes the first user turn (the user message and the answers up to the next user
    /// message) after the system message, unless it is the last user message.
    fn drop_oldest_turn(&mut self) -> bool {
        let start = usize::from(self.system().is_some());
        let Some(last_user) = self.messages.iter().rposition(|m| m.role == "user") else {
            return false;
        };
        if start >= last_user {
            return false;
        }
        let end = self.messages[start + 1..last_user]
            .iter()
            .position(|m| m.role == "user")
            .map_or(last_user, |i| start + 1 + i);
        self.messages.drain(start..end);
        true
    }

    /// Brings the cache to `prompt`: keeps the common prefix, evaluates the rest and returns the
    /// logits after the last prompt token (`None` if `stop` was raised first). When the whole
    /// prompt is already cached, its last token is evaluated again for its logits.
    pub fn sync(
        &mut self,
        engine: &mut impl Engine,
        prompt: &[u32],
        stop: &AtomicBool,
    ) -> Result<Option<Vec<f32>>, SessionError> {
        // The engine's cache may hold fewer positions than we think (e.g. after an error).
        self.cached.truncate(engine.cache_len());
        let mut keep = self
            .cached
            .iter()
            .zip(prompt)
            .take_while(|(a, b)| a == b)
            .count();
        if keep == prompt.len() {
            keep = keep.saturating_sub(1);
        }
        self.cached.truncate(keep);
        engine.truncate(keep);
        let rest = &prompt[keep..];
        self.stats.prompt_tokens = prompt.len();
        self.stats.prompt_reused = keep;
        self.stats.prompt_evaluated = 0;
        let mut logits = None;
        for chunk in rest.chunks(PROMPT_CHUNK) {
            if stop.load(Ordering::Relaxed) {
                return Ok(None);
            }
            let out = engine.eval(chunk);
            if out.is_err() {
                // The cache may hold part of the chunk; start again from what is certain.
                engine.truncate(self.cached.len());
            }
            logits = Some(out?);
            self.cached.extend_from_slice(chunk);
            for &t in chunk {
                self.sampler.accept(t);
            }
            self.stats.prompt_evaluated += chunk.len();
            self.stats.total_evaluated += chunk.len();
        }
        Ok(logits)
    }

    /// Writes the conversation and settings as JSON.
    pub fn save(&self, path: &Path) -> Result<(), SessionError> {
        let s = &self.settings.sampling;
        let doc = json!({
            "format": "kiln-chat",
            "version": 1,
            "messages": self.messages.iter()
                .map(|m| json!({"role": m.role, "content": m.content}))
                .collect::<Vec<_>>(),
            "settings": {
                "temp": short(s.temperature),
                "top_k": s.top_k,
                "top_p": short(s.top_p),
                "min_p": short(s.min_p),
                "repeat_penalty": short(s.repeat_penalty),
                "repeat_last_n": s.penalty_last_n,
                "frequency_penalty": short(s.frequency_penalty),
                "presence_penalty": short(s.presence_penalty),
                "seed": self.sampler.seed(),
                "n_predict": self.settings.n_predict,
            },
        });
        let text = serde_json::to_string_pretty(&doc).map_err(|e| file_error(path, e))?;
        std::fs::write(path, text + "\n").map_err(|e| file_error(path, e))
    }

    /// Replaces the conversation and settings with those of a [`Session::save`] file. Settings
    /// absent from the file keep their current values.
    pub fn load(&mut self, path: &Path) -> Result<(), SessionError> {
        let text = std::fs::read_to_string(path).map_err(|e| file_error(path, e))?;
        let doc: Value = serde_json::from_str(&text).map_err(|e| file_error(path, e))?;
        let bad = |why: &str| file_error(path, why);
        let messages = doc["messages"]
            .as_array()
            .ok_or_else(|| bad("no \"messages\" array (not a kiln chat file?)"))?
            .iter()
            .enumerate()
            .map(|(i, m)| match (m["role"].as_str(), m["content"].as_str()) {
                (Some(r), Some(c)) => Ok(Message::new(r, c)),
                _ => Err(bad(&format!(
                    "messages[{i}] needs string \"role\" and \"content\""
                ))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut settings = self.settings.clone();
        if let Some(s) = doc.get("settings").filter(|s| !s.is_null()) {
            read_settings(s, &mut settings).map_err(|why| bad(&why))?;
        }
        self.messages = messages;
        self.set_settings(settings);
        Ok(())
    }
}

/// An `f32` setting as the shortest decimal that reads back to it (`0.05`, not
/// `0.05000000074505806`).
fn short(x: f32) -> f64 {
    x.to_string().parse().unwrap_or(f64::from(x))
}

fn file_error(path: &Path, why: impl std::fmt::Display) -> SessionError {
    SessionError::File {
        path: path.display().to_string(),
        why: why.to_string(),
    }
}

/// Reads the optional fields of a saved `"settings"` object into `out`.
fn read_settings(s: &Value, out: &mut Settings) -> Result<(), String> {
    let num = |key: &str| -> Result<Option<f64>, String> {
        match s.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| format!("settings.{key} must be a number")),
        }
    };
    let int = |key: &str| -> Result<Option<u64>, String> {
        match num(key)? {
            Some(x) if x >= 0.0 && x.fract() == 0.0 => Ok(Some(x as u64)),
            Some(_) => Err(format!("settings.{key} must be a whole number >= 0")),
            None => Ok(None),
        }
    };
    let c = &mut out.sampling;
    if let Some(x) = num("temp")? {
        c.temperature = x as f32;
    }
    if let Some(x) = num("top_k")? {
        c.top_k = x as i32;
    }
    if let Some(x) = num("top_p")? {
        c.top_p = x as f32;
    }
    if let Some(x) = num("min_p")? {
        c.min_p = x as f32;
    }
    if let Some(x) = num("repeat_penalty")? {
        c.repeat_penalty = x as f32;
    }
    if let Some(x) = int("repeat_last_n")? {
        c.penalty_last_n = x as usize;
    }
    if let Some(x) = num("frequency_penalty")? {
        c.frequency_penalty = x as f32;
    }
    if let Some(x) = num("presence_penalty")? {
        c.presence_penalty = x as f32;
    }
    if let Some(x) = int("seed")? {
        c.seed = u32::try_from(x).map_err(|_| "settings.seed must fit in 32 bits".to_string())?;
    }
    if s.get("n_predict").is_some() {
        out.n_predict = int("n_predict")?.map(|n| n as usize);
    }
    Ok(())
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
