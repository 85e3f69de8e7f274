//! Tests of `kiln_models::chat` against renderings made by jinja2 set up as
//! Hugging Face transformers does (scripts/fixtures/make_chat_fixtures.py →
//! tests/fixtures/chat/*.json).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use kiln_models::chat::{chatml, strftime_utc, ChatError, ChatMessage, ChatTemplate};
use serde::Deserialize;

#[derive(Deserialize)]
struct Fixture {
    name: String,
    template: String,
    bos_token: String,
    eos_token: String,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    messages: Vec<ChatMessage>,
    add_generation_prompt: bool,
    expected: Option<String>,
    error: Option<String>,
}

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/chat")
}

fn load(name: &str) -> Fixture {
    let path = fixture_dir().join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run scripts/fixtures/make_chat_fixtures.py)",
            path.display()
        )
    });
    serde_json::from_str(&text).unwrap()
}

/// Render every case with `tmpl`; return all mismatches, described.
fn check_cases(fx: &Fixture, tmpl: &ChatTemplate) -> Vec<String> {
    let mut failures = Vec::new();
    for (i, case) in fx.cases.iter().enumerate() {
        let got = tmpl.render(&case.messages, case.add_generation_prompt);
        let ok = match (&got, &case.expected, &case.error) {
            (Ok(s), Some(want), None) => s == want,
            (Err(ChatError::Raised(m)), None, Some(want)) => m == want,
            _ => false,
        };
        if !ok {
            failures.push(format!(
                "{} case {i} (gen={}): got {got:?}, want {:?} / error {:?}",
                fx.name, case.add_generation_prompt, case.expected, case.error
            ));
        }
    }
    failures
}

fn run_fixture(name: &str) {
    let fx = load(name);
    assert!(!fx.cases.is_empty(), "{name}: no cases");
    let tmpl = ChatTemplate::new(&fx.template, &fx.bos_token, &fx.eos_token).unwrap();
    let failures = check_cases(&fx, &tmpl);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn smollm2_template_matches_jinja2() {
    run_fixture("smollm2");
}

#[test]
fn llama3_template_matches_jinja2() {
    run_fixture("llama3");
}

#[test]
fn llama31_style_template_matches_jinja2() {
    run_fixture("llama31");
}

#[test]
fn every_fixture_file_is_tested() {
    let tested = [
        "chatml", "gemma", "llama3", "llama31", "pycompat", "smollm2", "tojson",
    ];
    let mut found: Vec<String> = std::fs::read_dir(fixture_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    found.sort();
    assert_eq!(found, tested);
}

#[test]
fn gemma_template_matches_jinja2_and_raises() {
    let fx = load("gemma");
    assert!(
        fx.cases.iter().any(|c| c.error.is_some()),
        "gemma: no error cases"
    );
    run_fixture("gemma");
}

#[test]
fn python_methods_namespace_loops_whitespace_match_jinja2() {
    run_fixture("pycompat");
}

#[test]
fn tojson_matches_python_json_dumps() {
    run_fixture("tojson");
}

#[test]
fn chatml_fallback_matches_jinja2() {
    let fx = load("chatml");
    let failures = check_cases(&fx, &chatml());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(chatml().eos_token(), "<|im_end|>");
    assert_eq!(
        chatml()
            .render(&[ChatMessage::new("user", "hi")], true)
            .unwrap(),
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    );
}

#[test]
fn smollm2_fixture_template_is_the_gguf_one() {
    let Some(path) = kiln_testkit::default_model() else {
        return;
    };
    let file = kiln_core::gguf::GgufFile::open(&path).unwrap();
    let src = file.get_str("tokenizer.chat_template").unwrap();
    assert_eq!(src, load("smollm2").template);
    let tokens = file.get_str_array("tokenizer.ggml.tokens").unwrap();
    let bos = tokens[file.get_u32("tokenizer.ggml.bos_token_id").unwrap() as usize];
    let eos = tokens[file.get_u32("tokenizer.ggml.eos_token_id").unwrap() as usize];
    let tmpl = ChatTemplate::new(src, bos, eos).unwrap();
    let out = tmpl
        .render(&[ChatMessage::new("user", "What is 2+2?")], true)
        .unwrap();
    assert_eq!(
        out,
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
         <|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
    );
}

#[test]
fn malformed_templates_give_one_line_syntax_errors() {
    let cases = [
        (
            "{% for m in messages %}{{ m.content }}",
            "unexpected end of input",
        ),
        ("{{ messages[0].content ", "unexpected end of input"),
        ("{% if add_generation_prompt %}x{% endfor %}", "endfor"),
        ("line one\n\n{% bogus %}", "bogus"),
        ("{{ 'unterminated }}", "unexpected end of string"),
    ];
    for (src, needle) in cases {
        let err = ChatTemplate::new(src, "<s>", "</s>").unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, ChatError::Syntax(_)), "{src:?}: {err:?}");
        assert!(!msg.contains('\n'), "not one line: {msg:?}");
        assert!(msg.contains("syntax error"), "{msg}");
        assert!(msg.to_lowercase().contains(needle), "{src:?}: {msg}");
        eprintln!("{src:?} -> {msg}");
    }
    // The line number of the fault is reported.
    let msg = ChatTemplate::new("ok\nok\n{% endif %}", "", "")
        .unwrap_err()
        .to_string();
    assert!(msg.contains(":3"), "{msg}");
}

#[test]
fn render_errors_are_one_line_and_distinct_from_raise() {
    let msgs = [ChatMessage::new("user", "hi")];
    // Unknown method on a string: a render error, not a raise.
    let t = ChatTemplate::new("{{ messages[0].content.no_such_method() }}", "", "").unwrap();
    let err = t.render(&msgs, false).unwrap_err();
    assert!(matches!(err, ChatError::Render(_)), "{err:?}");
    assert!(!err.to_string().contains('\n'), "{err}");
    // Unknown filter.
    let err = ChatTemplate::new("{{ messages | frobnicate }}", "", "")
        .and_then(|t| t.render(&msgs, false))
        .unwrap_err();
    assert!(err.to_string().contains("frobnicate"), "{err}");
    // raise_exception keeps its exact message, also when nested in a macro.
    let t = ChatTemplate::new(
        "{% macro check(m) %}{% if m.role == 'user' %}{{ raise_exception('bad: ' ~ m.role) }}{% endif %}{% endmacro %}\
         {% for m in messages %}{{ check(m) }}{% endfor %}",
        "",
        "",
    )
    .unwrap();
    assert_eq!(
        t.render(&msgs, false).unwrap_err(),
        ChatError::Raised("bad: user".into())
    );
    assert_eq!(
        t.render(&[], false).unwrap(),
        "",
        "no messages, nothing raised"
    );
}

#[test]
fn variables_and_defaults() {
    let t = ChatTemplate::new(
        "[{{ bos_token }}|{{ eos_token }}|{{ messages | length }}|{% if add_generation_prompt %}G{% endif %}\
         |{{ tools is defined }}|{{ messages[0].get('name', 'anon') }}]",
        "<s>",
        "</s>",
    )
    .unwrap();
    assert_eq!(t.bos_token(), "<s>");
    let msgs = [
        ChatMessage::new("user", "x"),
        ChatMessage::new("assistant", "y"),
    ];
    assert_eq!(t.render(&msgs, true).unwrap(), "[<s>|</s>|2|G|False|anon]");
    assert_eq!(t.render(&msgs, false).unwrap(), "[<s>|</s>|2||False|anon]");
}

#[test]
fn message_content_is_not_evaluated() {
    let msgs = [ChatMessage::new(
        "user",
        "{{ bos_token }}{% raise %}{{ raise_exception('x') }}",
    )];
    let out = chatml().render(&msgs, false).unwrap();
    assert_eq!(
        out,
        "<|im_start|>user\n{{ bos_token }}{% raise %}{{ raise_exception('x') }}<|im_end|>\n"
    );
}

#[test]
fn strftime_now_and_utc_formatting() {
    // Expected strings from Python's time.strftime(fmt, time.gmtime(t)).
    let fmt = "%d %b %Y|%B %A %a|%H:%M:%S|%j|%y|%m|%%|%Q";
    let cases = [
        (
            0i64,
            "01 Jan 1970|January Thursday Thu|00:00:00|001|70|01|%|%Q",
        ),
        (
            951_782_400,
            "29 Feb 2000|February Tuesday Tue|00:00:00|060|00|02|%|%Q",
        ),
        (
            1_721_955_723,
            "26 Jul 2024|July Friday Fri|01:02:03|208|24|07|%|%Q",
        ),
        (
            4_102_444_799,
            "31 Dec 2099|December Thursday Thu|23:59:59|365|99|12|%|%Q",
        ),
        (
            -31_536_000,
            "01 Jan 1969|January Wednesday Wed|00:00:00|001|69|01|%|%Q",
        ),
    ];
    for (t, want) in cases {
        assert_eq!(strftime_utc(t, fmt), want, "t={t}");
    }
    // The template global exists and yields a plausible date ("dd Mon yyyy").
    let t = ChatTemplate::new("{{ strftime_now('%d %b %Y') }}", "", "").unwrap();
    let out = t.render(&[], false).unwrap();
    assert_eq!(out.len(), 11, "{out:?}");
    let year: i32 = out[7..].parse().unwrap();
    assert!(year >= 2024, "{out}");
}

/// Gemma's turn format (the fallback for Gemma files without a template),
/// checked against the published format by hand: user/model turns closed by
/// `<end_of_turn>\n`, `assistant` written as `model`, system text prefixed to
/// the next user turn, no BOS (the tokenizer adds it).
#[test]
fn gemma_turn_format() {
    use kiln_models::chat::{gemma_turns, ChatMessage};
    let t = gemma_turns().unwrap();
    let msgs = [
        ChatMessage::new("system", "Be brief."),
        ChatMessage::new("user", "Hi!"),
        ChatMessage::new("assistant", "Hello."),
        ChatMessage::new("user", "2+2?"),
    ];
    assert_eq!(
        t.render(&msgs, true).unwrap(),
        "<start_of_turn>user\nBe brief.\n\nHi!<end_of_turn>\n\
         <start_of_turn>model\nHello.<end_of_turn>\n\
         <start_of_turn>user\n2+2?<end_of_turn>\n\
         <start_of_turn>model\n"
    );
    assert_eq!(
        t.render(&msgs[1..2], false).unwrap(),
        "<start_of_turn>user\nHi!<end_of_turn>\n"
    );
    assert_eq!(t.eos_token(), "<end_of_turn>");
}
