//! `kiln chat` with stdin piped, on the real SmolLM2 model at temperature 0: one message per
//! line in, each answer followed by a newline out, and nothing else on stdout (no prompts,
//! banners or escape codes).

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

/// Runs `kiln chat` with `input` on stdin; returns (stdout, stderr).
fn chat(model: &std::path::Path, input: &str) -> (String, String) {
    let data = std::env::temp_dir().join(format!("kiln-chat-piped-{}", std::process::id()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("chat")
        .arg("-m")
        .arg(model)
        .args(["--temp", "0", "-c", "1024"])
        .args(["--system", "You are a helpful assistant."])
        .env("XDG_DATA_HOME", &data)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start kiln chat");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().expect("kiln chat runs");
    let stdout = String::from_utf8(out.stdout).expect("stdout is UTF-8");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "kiln chat failed: {stderr}");
    assert!(!data.exists(), "piped chat must not write a history file");
    (stdout, stderr)
}

#[test]
fn piped_chat_prints_one_answer_per_message_and_nothing_else() {
    let model = common::model_path("smollm2-135m-instruct-q4_1");
    let q1 = "What is the capital of France?\n";
    let q2 = "What is the capital of Germany?\n";
    let (one, _) = chat(&model, q1);
    let (two, stderr) = chat(&model, &format!("{q1}{q2}"));

    assert!(one.ends_with('\n') && one.trim().len() > 1, "{one:?}");
    assert!(one.contains("Paris"), "first answer: {one:?}");
    // The same first answer, then a second, non-empty one ending with a newline.
    let second = two
        .strip_prefix(&one)
        .unwrap_or_else(|| panic!("first answer changed: {one:?} vs {two:?}"));
    assert!(
        second.ends_with('\n') && second.trim().len() > 1,
        "{second:?}"
    );
    assert!(second.contains("Berlin"), "second answer: {second:?}");
    for out in [&one, &two] {
        assert!(!out.contains('\x1b'), "escape code on stdout: {out:?}");
        assert!(!out.contains("> "), "prompt on stdout: {out:?}");
        assert!(!out.contains("kiln chat"), "banner on stdout: {out:?}");
    }
    assert!(
        !stderr.contains('\x1b'),
        "escape code on stderr: {stderr:?}"
    );
}

#[test]
fn piped_commands_answer_on_stderr() {
    let model = common::model_path("smollm2-135m-instruct-q4_1");
    let (out, err) = chat(&model, "/help\n/stats\n");
    assert_eq!(out, "", "commands print nothing on stdout when piped");
    assert!(err.contains("/regen") && err.contains("turns: 0"), "{err}");
}
