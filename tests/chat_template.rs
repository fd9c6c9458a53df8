//! Chat templates against the reference renderer: `../shared/golden/models/smollm2-chat-template.json`
//! holds conversations rendered by transformers' `apply_chat_template` with SmolLM2's template;
//! `tests/data/smollm2-chat-template.jinja` is that template, extracted byte for byte from the
//! `tokenizer.chat_template` of `SmolLM2-135M-Instruct.Q4_1.gguf` (no trailing newline).

use kiln::chat::{fallback_for, ChatTemplate, Message, TemplateError};
use std::path::PathBuf;

fn shared_root() -> PathBuf {
    let root = std::env::var_os("KILN_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared"));
    assert!(
        root.is_dir(),
        "shared data not found at {} (set KILN_SHARED)",
        root.display()
    );
    root
}

fn smollm2_source() -> String {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/smollm2-chat-template.jinja");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn smollm2() -> ChatTemplate {
    // SmolLM2's BOS/EOS (ids 1/2 in its GGUF vocabulary).
    ChatTemplate::new(&smollm2_source(), "<|im_start|>", "<|im_end|>")
        .expect("SmolLM2 template compiles")
}

struct Case {
    messages: Vec<Message>,
    add_generation_prompt: bool,
    text: String,
}

fn golden_cases() -> Vec<Case> {
    let path = shared_root().join("golden/models/smollm2-chat-template.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let json: serde_json::Value = serde_json::from_str(&text).expect("golden json parses");
    let cases = json["cases"].as_array().expect("`cases` array");
    cases
        .iter()
        .map(|c| Case {
            messages: c["messages"]
                .as_array()
                .expect("messages")
                .iter()
                .map(|m| Message::new(m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
                .collect(),
            add_generation_prompt: c["add_generation_prompt"].as_bool().expect("flag"),
            text: c["text"].as_str().expect("text").to_string(),
        })
        .collect()
}

#[test]
fn smollm2_golden_cases_render_byte_identical() {
    let tmpl = smollm2();
    let cases = golden_cases();
    assert!(
        cases.len() >= 6,
        "expected the 6 golden conversations, got {}",
        cases.len()
    );
    for (i, case) in cases.iter().enumerate() {
        let got = tmpl
            .render(&case.messages, case.add_generation_prompt)
            .unwrap();
        assert_eq!(
            got.as_bytes(),
            case.text.as_bytes(),
            "case {i}: {:?}",
            case.messages
        );
    }
}

#[test]
fn fixture_is_the_gguf_template_when_the_model_is_present() {
    // The fixture must stay the GGUF's text; check it whenever the model has been fetched.
    let gguf =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    let Ok(bytes) = std::fs::read(&gguf) else {
        // CI always fetches the models first (.ci/run), so there a missing file is a failure.
        assert!(
            std::env::var_os("CI").is_none(),
            "{} missing in CI",
            gguf.display()
        );
        eprintln!(
            "{} not fetched (python3 models/fetch.py); cross-check skipped",
            gguf.display()
        );
        return;
    };
    let source = smollm2_source();
    // GGUF strings are a u64 length then the bytes, right after the key.
    let key = b"tokenizer.chat_template";
    let pos = bytes
        .windows(key.len())
        .position(|w| w == key)
        .expect("key present in the GGUF");
    let at = pos + key.len() + 4; // value type (u32 = 8, string)
    let len = u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap()) as usize;
    assert_eq!(&bytes[at + 8..at + 8 + len], source.as_bytes());
}

#[test]
fn chatml_builtin_agrees_with_smollm2_when_a_system_message_is_given() {
    // SmolLM2's template is ChatML plus a default system prompt; with an explicit system
    // message the two must agree byte for byte.
    let chatml = ChatTemplate::builtin("chatml").unwrap();
    let mut checked = 0;
    for case in golden_cases() {
        if case.messages.first().map(|m| m.role.as_str()) == Some("system") {
            assert_eq!(
                chatml
                    .render(&case.messages, case.add_generation_prompt)
                    .unwrap(),
                case.text
            );
            checked += 1;
        }
    }
    assert!(checked >= 2);
}

#[test]
fn gemma_builtin_renders_the_gemma3_format() {
    let gemma = ChatTemplate::builtin("gemma").unwrap();
    let one = gemma.render(&[Message::user("Hi")], true).unwrap();
    assert_eq!(
        one,
        "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n"
    );

    let convo = [
        Message::system("Be brief."),
        Message::user("  Hello  "),
        Message::assistant("Hi!\n"),
        Message::user("Bye"),
    ];
    assert_eq!(
        gemma.render(&convo, false).unwrap(),
        "<bos><start_of_turn>user\nBe brief.\n\nHello<end_of_turn>\n\
         <start_of_turn>model\nHi!<end_of_turn>\n\
         <start_of_turn>user\nBye<end_of_turn>\n"
    );
}

#[test]
fn gemma_gguf_has_no_template_so_the_fallback_is_gemma() {
    let fb = fallback_for("gemma3");
    assert_eq!(fb.name, "gemma");
    assert!(
        fb.notice.contains("gemma") && fb.notice.contains("tokenizer.chat_template"),
        "{}",
        fb.notice
    );
    assert_eq!(
        fb.template.render(&[Message::user("Hi")], true).unwrap(),
        "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n"
    );
    assert_eq!(fallback_for("Meta-Llama-3-8B-Instruct").name, "llama3");
    assert_eq!(fallback_for("llama").name, "chatml");
}

#[test]
fn llama3_builtin_renders_headers() {
    let t = ChatTemplate::builtin("llama3").unwrap();
    assert_eq!(
        t.render(&[Message::system("S"), Message::user("U ")], true)
            .unwrap(),
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|>\
         <|start_header_id|>user<|end_header_id|>\n\nU<|eot_id|>\
         <|start_header_id|>assistant<|end_header_id|>\n\n"
    );
}

#[test]
fn raise_exception_is_a_named_error() {
    let gemma = ChatTemplate::builtin("gemma").unwrap();
    let err = gemma
        .render(&[Message::user("a"), Message::user("b")], true)
        .unwrap_err();
    match &err {
        TemplateError::Raised { name, message } => {
            assert_eq!(name, "builtin:gemma");
            assert_eq!(
                message,
                "Conversation roles must alternate user/assistant/user/assistant/..."
            );
        }
        other => panic!("expected Raised, got {other:?}"),
    }
    let shown = err.to_string();
    assert!(
        shown.contains("builtin:gemma") && shown.contains("must alternate"),
        "{shown}"
    );
}

#[test]
fn syntax_error_names_template_and_line() {
    let err = ChatTemplate::new("ok\n{% for m in messages %}{{ m.content }", "", "").unwrap_err();
    match &err {
        TemplateError::Syntax { name, line, .. } => {
            assert_eq!(name, "tokenizer.chat_template");
            assert_eq!(*line, Some(2));
        }
        other => panic!("expected Syntax, got {other:?}"),
    }
    assert!(err.to_string().contains("tokenizer.chat_template"), "{err}");

    let err = ChatTemplate::new("{% if x %}never closed", "", "").unwrap_err();
    assert!(matches!(err, TemplateError::Syntax { .. }), "{err:?}");
}

#[test]
fn runtime_errors_are_errors_not_garbage() {
    let t = ChatTemplate::with_name("my.jinja", "{{ messages | no_such_filter }}", "", "")
        .unwrap_or_else(|e| {
            // minijinja may reject unknown filters at compile time; either way it must be named.
            assert!(e.to_string().contains("my.jinja"), "{e}");
            ChatTemplate::with_name("my.jinja", "{{ 1 + messages }}", "", "").unwrap()
        });
    let err = t.render(&[Message::user("x")], false).unwrap_err();
    assert!(matches!(err, TemplateError::Render { .. }), "{err:?}");
    assert!(err.to_string().contains("my.jinja"), "{err}");
    assert!(matches!(
        ChatTemplate::builtin("vicuna"),
        Err(TemplateError::UnknownBuiltin(_))
    ));
}

#[test]
fn jinja2_semantics_used_by_real_templates() {
    // trim_blocks + lstrip_blocks as transformers sets them: block lines leave no whitespace.
    let src = "{% for m in messages %}\n    {% if m.role == 'user' %}\n[{{ m.content }}]\n    {% endif %}\n{% endfor %}\n";
    let t = ChatTemplate::new(src, "", "").unwrap();
    assert_eq!(
        t.render(&[Message::user("a"), Message::user("b")], false)
            .unwrap(),
        "[a]\n[b]\n"
    );

    // Python string methods (pycompat), loop controls, namespace, slicing, tools=None.
    let src = "{%- set ns = namespace(n=0) -%}\
               {%- for m in messages -%}\
                 {%- if m.content.startswith('skip') %}{% continue %}{% endif -%}\
                 {%- set ns.n = ns.n + 1 -%}\
                 {{ m.content.strip().upper() }}|{{ m.content.split(',')[0] }}|{{ m['role'][:2] }};\
               {%- endfor -%}\
               {{ ns.n }}{{ ' no-tools' if tools is none }}{{ ' gen' if add_generation_prompt }}";
    let t = ChatTemplate::new(src, "", "").unwrap();
    let out = t
        .render(
            &[
                Message::user(" a,b "),
                Message::user("skip me"),
                Message::assistant("c"),
            ],
            true,
        )
        .unwrap();
    assert_eq!(out, "A,B| a|us;C|c|as;2 no-tools gen");

    // tojson is Python's json.dumps (no HTML escaping, ", " separators), bos/eos are bound.
    let t = ChatTemplate::new(
        "{{ bos_token }}{{ messages | tojson }}{{ eos_token }}",
        "<s>",
        "</s>",
    )
    .unwrap();
    assert_eq!(
        t.render(&[Message::user("<a> & \"b\"")], false).unwrap(),
        "<s>[{\"role\": \"user\", \"content\": \"<a> & \\\"b\\\"\"}]</s>"
    );
    let t = ChatTemplate::new("{{ messages[0] | tojson(indent=2) }}", "", "").unwrap();
    assert_eq!(
        t.render(&[Message::user("x")], false).unwrap(),
        "{\n  \"role\": \"user\",\n  \"content\": \"x\"\n}"
    );

    // strftime_now exists and formats the current date.
    let t = ChatTemplate::new("{{ strftime_now('%Y') }}", "", "").unwrap();
    let year: i32 = t.render(&[], false).unwrap().parse().unwrap();
    assert!(year >= 2024);

    // transformers' {% generation %} marker renders its body unchanged.
    let t = ChatTemplate::new(
        "{% for m in messages %}{% generation %}{{ m.content }}{% endgeneration %}{% endfor %}",
        "",
        "",
    )
    .unwrap();
    assert_eq!(t.render(&[Message::assistant("ok")], false).unwrap(), "ok");

    // A single trailing newline is dropped (jinja2 keep_trailing_newline=False).
    let t = ChatTemplate::new("x\n", "", "").unwrap();
    assert_eq!(t.render(&[], false).unwrap(), "x");
}

#[test]
fn jinja2_reference_cases_render_identically() {
    // tests/data/jinja2/cases.json: kiln-authored templates exercising Python string methods,
    // loop variables, namespaces, macros, tojson options and raise_exception, rendered by jinja2
    // configured as transformers configures it (tests/data/jinja2/make_cases.py).
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/jinja2");
    let text = std::fs::read_to_string(dir.join("cases.json")).expect("cases.json");
    let json: serde_json::Value = serde_json::from_str(&text).expect("cases.json parses");
    let cases = json["cases"].as_array().expect("cases");
    assert!(cases.len() >= 20);
    let mut errors_seen = 0;
    for (i, c) in cases.iter().enumerate() {
        let file = c["template"].as_str().unwrap();
        let source = std::fs::read_to_string(dir.join(file)).expect("template file");
        let t = ChatTemplate::with_name(file, &source, "<s>", "</s>").unwrap();
        let messages: Vec<Message> = c["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| Message::new(m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
            .collect();
        let got = t.render(&messages, c["add_generation_prompt"].as_bool().unwrap());
        match (&got, c["text"].as_str(), c["error"].as_str()) {
            (Ok(g), Some(want), _) => assert_eq!(g, want, "case {i} ({file}): {messages:?}"),
            (Err(TemplateError::Raised { name, message }), None, Some(want)) => {
                assert_eq!(name, file);
                assert_eq!(message, want, "case {i}");
                errors_seen += 1;
            }
            _ => panic!("case {i} ({file}) {messages:?}: got {got:?}, want {c}"),
        }
    }
    assert!(errors_seen >= 2, "the reference has raise_exception cases");
}
