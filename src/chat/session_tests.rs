//! Cache reuse, overflow and save/load of [`Session`](super::Session), with a fake engine
//! that tokenizes bytes.

use super::*;
use std::collections::VecDeque;

const EOG: u32 = 256;

/// One token per byte, plus an end-of-turn token.
struct ByteCodec;

impl Codec for ByteCodec {
    fn encode_prompt(&self, text: &str) -> Vec<u32> {
        text.bytes().map(u32::from).collect()
    }
    fn piece(&self, id: u32) -> Vec<u8> {
        vec![id as u8]
    }
    fn is_eog(&self, id: u32) -> bool {
        id == EOG
    }
}

/// A cache that records what it is asked to do, and logits that spell out `script`.
struct FakeEngine {
    n_ctx: usize,
    cache: Vec<u32>,
    evals: Vec<Vec<u32>>,
    script: VecDeque<u32>,
}

impl FakeEngine {
    fn new(n_ctx: usize) -> Self {
        Self {
            n_ctx,
            cache: Vec::new(),
            evals: Vec::new(),
            script: VecDeque::new(),
        }
    }
    /// The next answer: `text`'s bytes, then end of turn.
    fn will_say(&mut self, text: &str) {
        self.script.extend(text.bytes().map(u32::from));
        self.script.push_back(EOG);
    }
    fn evaluated_since(&self, call: usize) -> usize {
        self.evals[call..].iter().map(Vec::len).sum()
    }
}

impl Engine for FakeEngine {
    fn n_ctx(&self) -> usize {
        self.n_ctx
    }
    fn cache_len(&self) -> usize {
        self.cache.len()
    }
    fn truncate(&mut self, n: usize) {
        self.cache.truncate(n);
    }
    fn eval(&mut self, tokens: &[u32]) -> Result<Vec<f32>, ModelError> {
        if self.cache.len() + tokens.len() > self.n_ctx {
            return Err(ModelError::ContextFull {
                have: self.cache.len(),
                adding: tokens.len(),
                n_ctx: self.n_ctx,
            });
        }
        self.cache.extend_from_slice(tokens);
        self.evals.push(tokens.to_vec());
        let mut logits = vec![0.0; EOG as usize + 1];
        logits[self.script.pop_front().unwrap_or(EOG) as usize] = 1.0;
        Ok(logits)
    }
}

fn session(system: Option<&str>) -> Session {
    let settings = Settings {
        sampling: SamplerConfig::greedy(),
        n_predict: None,
    };
    let template = ChatTemplate::builtin("chatml").unwrap();
    Session::new(template, settings, system.map(String::from))
}

fn ask(s: &mut Session, e: &mut FakeEngine, q: &str, a: &str) -> (Reply, Vec<String>) {
    e.will_say(a);
    s.push_user(q);
    let mut notices = Vec::new();
    let stop = AtomicBool::new(false);
    let reply = s
        .respond(e, &ByteCodec, &stop, &mut |ev| {
            if let Event::Notice(n) = ev {
                notices.push(n.to_string())
            }
        })
        .unwrap();
    (reply, notices)
}

#[test]
fn second_turn_evaluates_only_the_new_tokens() {
    let mut s = session(Some("Be brief."));
    let mut e = FakeEngine::new(4096);
    let (r1, _) = ask(&mut s, &mut e, "hi", "ok");
    assert_eq!((r1.text.as_str(), r1.stop), ("ok", Stop::EndOfTurn));
    let first_prompt = s.stats().prompt_tokens;
    assert_eq!(s.stats().prompt_evaluated, first_prompt);
    assert_eq!(s.stats().generated, 3); // "o", "k", end of turn
                                        // The answer's tokens were evaluated, the end-of-turn one was not.
    assert_eq!(e.cache.len(), first_prompt + 2);
    assert_eq!(s.cached_tokens(), &e.cache[..]);

    let calls = e.evals.len();
    let (r2, notices) = ask(&mut s, &mut e, "and?", "fine");
    assert_eq!(r2.text, "fine");
    assert!(notices.is_empty(), "{notices:?}");
    let n = s.messages().len();
    let whole = s
        .template()
        .render(&s.messages()[..n - 1], true)
        .unwrap()
        .len();
    let st = s.stats();
    assert_eq!(st.prompt_tokens, whole);
    // Reused: the first prompt and the "ok" that was evaluated; evaluated: the rest,
    // beginning with the end tag the first answer stopped at.
    assert_eq!(st.prompt_reused, first_prompt + 2);
    assert_eq!(st.prompt_evaluated, whole - first_prompt - 2);
    let rest = &e.evals[calls];
    assert!(rest.starts_with(&ByteCodec.encode_prompt("<|im_end|>")));
    assert_eq!(e.evaluated_since(calls), st.prompt_evaluated + 4);
    assert_eq!(
        e.cache,
        ByteCodec.encode_prompt(&s.template().render(s.messages(), false).unwrap())
            [..e.cache.len()]
    );
}

#[test]
fn a_fully_cached_prompt_re_evaluates_its_last_token() {
    let mut s = session(None);
    let mut e = FakeEngine::new(4096);
    ask(&mut s, &mut e, "hi", "ok");
    let first_prompt = s.stats().prompt_tokens;
    s.prepare_regen().unwrap();
    assert_eq!(s.messages().len(), 1);
    e.will_say("yo");
    let stop = AtomicBool::new(false);
    let r = s.respond(&mut e, &ByteCodec, &stop, &mut |_| {}).unwrap();
    assert_eq!(r.text, "yo");
    assert_eq!(s.stats().prompt_reused, first_prompt - 1);
    assert_eq!(s.stats().prompt_evaluated, 1);
    assert_eq!(s.messages().last().unwrap(), &Message::assistant("yo"));
}

#[test]
fn a_changed_system_message_re_evaluates_from_the_change() {
    let mut s = session(Some("Be brief."));
    let mut e = FakeEngine::new(4096);
    ask(&mut s, &mut e, "hi", "ok");
    s.set_system(Some("Be long.".into()));
    ask(&mut s, &mut e, "more", "sure");
    let common = "<|im_start|>system\nBe ".len();
    assert_eq!(s.stats().prompt_reused, common);
    assert_eq!(s.stats().prompt_evaluated, s.stats().prompt_tokens - common);
}

#[test]
fn overflow_drops_the_oldest_turns_and_keeps_the_system_message() {
    let mut s = session(Some("sys"));
    // reserve = 330 / 4 = 82 tokens for the answer; two turns fit, three do not
    let mut e = FakeEngine::new(330);
    let long = "x".repeat(40);
    ask(&mut s, &mut e, &format!("one {long}"), "a1");
    ask(&mut s, &mut e, &format!("two {long}"), "a2");
    assert_eq!(s.messages().len(), 5);
    let (r, notices) = ask(&mut s, &mut e, &format!("three {long}"), "a3");
    assert_eq!(r.text, "a3");
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert!(
        notices[0].contains("dropped the 1 oldest turn"),
        "{notices:?}"
    );
    let roles: Vec<&str> = s.messages().iter().map(|m| m.role.as_str()).collect();
    assert_eq!(roles, ["system", "user", "assistant", "user", "assistant"]);
    assert!(s.messages()[1].content.starts_with("two"));
    assert!(s.messages()[3].content.starts_with("three"));
    assert!(s.stats().prompt_tokens + 82 <= 330);
    // Only the system prompt could be kept in the cache.
    assert_eq!(
        s.stats().prompt_reused,
        "<|im_start|>system\nsys<|im_end|>\n<|im_start|>user\n".len()
    );
}

#[test]
fn a_message_that_cannot_fit_is_an_error_and_is_taken_back() {
    let mut s = session(None);
    let mut e = FakeEngine::new(64);
    e.will_say("never");
    s.push_user("y".repeat(100));
    let stop = AtomicBool::new(false);
    let err = s
        .respond(&mut e, &ByteCodec, &stop, &mut |_| {})
        .unwrap_err();
    assert!(
        matches!(err, SessionError::TooLong { n_ctx: 64, .. }),
        "{err}"
    );
    assert!(s.messages().is_empty());
}

#[test]
fn a_full_context_cuts_the_answer() {
    let mut s = session(None);
    let mut e = FakeEngine::new(80);
    let (r, notices) = ask(&mut s, &mut e, "q", &"z".repeat(100));
    assert_eq!(r.stop, Stop::ContextFull);
    assert_eq!(e.cache.len(), 80);
    assert!(!r.text.is_empty());
    assert!(notices.iter().any(|n| n.contains("context full")));
}

#[test]
fn interrupted_before_any_token_takes_the_turn_back() {
    let mut s = session(None);
    let mut e = FakeEngine::new(4096);
    s.push_user("hi");
    let stop = AtomicBool::new(true);
    let r = s.respond(&mut e, &ByteCodec, &stop, &mut |_| {}).unwrap();
    assert_eq!(r.stop, Stop::Interrupted);
    assert!(s.messages().is_empty());
}

#[test]
fn save_and_load_round_trip() {
    let mut s = session(Some("sys"));
    let mut e = FakeEngine::new(4096);
    ask(&mut s, &mut e, "hi \"there\"", "ok");
    let mut settings = s.settings().clone();
    settings.sampling.top_k = 7;
    settings.sampling.seed = 42;
    settings.n_predict = Some(9);
    s.set_settings(settings.clone());
    let path = std::env::temp_dir().join(format!("kiln-chat-{}.json", std::process::id()));
    s.save(&path).unwrap();
    let mut t = session(None);
    t.load(&path).unwrap();
    std::fs::remove_file(&path).ok();
    assert_eq!(t.messages(), s.messages());
    assert_eq!(t.settings(), &settings);

    std::fs::write(&path, "{\"messages\": [{\"role\": 1}]}").unwrap();
    let err = t.load(&path).unwrap_err().to_string();
    std::fs::remove_file(&path).ok();
    assert!(
        err.contains("messages[0]") && err.contains(&path.display().to_string()),
        "{err}"
    );
    assert_eq!(t.messages(), s.messages(), "a bad file changes nothing");
}
