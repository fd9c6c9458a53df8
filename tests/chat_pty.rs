//! `kiln chat` in a pseudo-terminal on the real SmolLM2 model at temperature 0: it answers
//! "What is the capital of France?" with Paris, answers a second question, and `/stats` shows
//! that the second turn evaluated only the new tokens (the first turn stayed in the KV cache).
#![cfg(unix)]

mod common;

use expectrl::{Expect, Regex, Session};
use std::process::Command;
use std::time::Duration;

/// Waits for the prompt at the start of a line and returns everything printed before it
/// (rustyline draws it as `\r ESC[K > `).
fn until_prompt(p: &mut expectrl::session::OsSession) -> String {
    let found = p
        .expect(Regex(r"(\n|\r|\x1b\[K)> "))
        .unwrap_or_else(|e| panic!("no prompt from kiln chat: {e}"));
    String::from_utf8_lossy(found.before()).into_owned()
}

/// In the `/stats` line starting with `label`, the number right before the word `word`.
fn number_before(stats: &str, label: &str, word: &str) -> usize {
    let line = stats
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with(label))
        .unwrap_or_else(|| panic!("no `{label}` line in the /stats output:\n{stats}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    words
        .windows(2)
        .find(|w| w[1].trim_end_matches(',') == word)
        .and_then(|w| w[0].parse().ok())
        .unwrap_or_else(|| panic!("no number before `{word}` in: {line}"))
}

#[test]
fn chat_in_a_terminal_reuses_the_cache_between_turns() {
    let model = common::model_path("smollm2-135m-instruct-q4_1");
    let data = std::env::temp_dir().join(format!("kiln-chat-pty-{}", std::process::id()));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln"));
    cmd.arg("chat")
        .arg("-m")
        .arg(&model)
        .args(["--temp", "0", "-c", "1024"])
        .args(["--system", "You are a helpful assistant."])
        .env("XDG_DATA_HOME", &data) // the history file goes there, not into the user's home
        .env("TERM", "xterm");
    let mut p = Session::spawn(cmd).expect("spawn kiln chat in a pty");
    p.get_process_mut()
        .set_window_size(120, 40)
        .expect("set the pty size");
    p.set_expect_timeout(Some(Duration::from_secs(300)));

    until_prompt(&mut p);
    p.send_line("What is the capital of France?").unwrap();
    let first = until_prompt(&mut p);
    assert!(first.contains("Paris"), "first answer: {first:?}");

    p.send_line("/stats").unwrap();
    let stats1 = until_prompt(&mut p);
    let prompt1 = number_before(&stats1, "last prompt:", "tokens");
    assert_eq!(
        number_before(&stats1, "last prompt:", "reused"),
        0,
        "{stats1}"
    );
    assert_eq!(
        number_before(&stats1, "last prompt:", "evaluated"),
        prompt1,
        "{stats1}"
    );
    assert!(stats1.contains("turns: 1"), "{stats1}");

    p.send_line("What is the capital of Germany?").unwrap();
    let second = until_prompt(&mut p);
    assert!(second.contains("Berlin"), "second answer: {second:?}");

    p.send_line("/stats").unwrap();
    let stats = until_prompt(&mut p);
    assert!(stats.contains("turns: 2"), "{stats}");
    let prompt = number_before(&stats, "last prompt:", "tokens");
    let reused = number_before(&stats, "last prompt:", "reused");
    let evaluated = number_before(&stats, "last prompt:", "evaluated");
    assert_eq!(reused + evaluated, prompt, "{stats}");
    // The second prompt is the whole conversation: the first turn's prompt and answer came
    // from the cache, only the tail (end of the answer, second question) was evaluated.
    assert!(
        reused > prompt1,
        "the first turn was re-evaluated:\n{stats1}\n{stats}"
    );
    assert!(
        evaluated * 2 < prompt,
        "the second turn evaluated {evaluated} of {prompt} prompt tokens:\n{stats}"
    );
    let total: usize = stats
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("prompt tokens evaluated since the start:")
        })
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no total in:\n{stats}"));
    assert_eq!(total, prompt1 + evaluated, "{stats1}\n{stats}");

    // Ctrl-C stops an answer, not the program; the stopped answer stays in the conversation.
    p.send_line("Write a long story about a dragon.").unwrap();
    p.expect("Once upon a time").expect("the story starts");
    p.send(expectrl::ControlCode::EndOfText).unwrap();
    let stopped = until_prompt(&mut p);
    assert!(stopped.contains("(answer stopped)"), "{stopped:?}");
    p.send_line("/stats").unwrap();
    let stats3 = until_prompt(&mut p);
    assert!(stats3.contains("turns: 3"), "{stats3}");

    // Ctrl-D leaves.
    p.send(expectrl::ControlCode::EndOfTransmission).unwrap();
    p.expect(expectrl::Eof).expect("kiln chat exits on Ctrl-D");
    let _ = std::fs::remove_dir_all(&data);
}
