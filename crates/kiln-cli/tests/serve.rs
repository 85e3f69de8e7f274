//! `kiln serve` end to end: the binary as a child process on 127.0.0.1
//! port 0 with the default model on the CPU (skipped when the model is
//! absent), talked to with a minimal HTTP/1.1 client.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Context of the test server: small, so the overflow case is quick.
const N_CTX: usize = 64;

struct Server {
    child: Child,
    addr: String,
    /// The server's stderr after the start-up lines.
    log: mpsc::Receiver<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(model: &Path) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(["serve", "-m", model.to_str().unwrap()])
            .args(["--device", "cpu", "-t", "2", "-c", &N_CTX.to_string()])
            .args(["--host", "127.0.0.1", "--port", "0"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn kiln serve");
        let (tx, rx) = mpsc::channel();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // Owned from here on, so a failed start still kills the child.
        let mut srv = Server {
            child,
            addr: String::new(),
            log: rx,
        };
        let mut seen = String::new();
        while srv.addr.is_empty() {
            match srv.log.recv_timeout(Duration::from_secs(600)) {
                Ok(line) => match line.split("listening on http://").nth(1) {
                    Some(a) => srv.addr = a.trim().to_string(),
                    None => seen.push_str(&(line + "\n")),
                },
                Err(e) => panic!("kiln serve did not start ({e}): {seen}"),
            }
        }
        srv
    }

    /// Send one request (`Connection: close`) and read the whole answer:
    /// status, head (lower-cased), body (de-chunked).
    fn raw(&self, request: &[u8]) -> (u16, String, String) {
        let mut s = TcpStream::connect(&self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(600))).unwrap();
        s.write_all(request).unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").expect("a response head");
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        let head = head.to_ascii_lowercase();
        let body = if head.contains("transfer-encoding: chunked") {
            dechunk(body)
        } else {
            body.to_string()
        };
        (status, head, body)
    }

    fn request(&self, method: &str, path: &str, body: &str) -> (u16, String, String) {
        self.raw(
            format!(
                "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
    }

    /// POST JSON, parse the JSON answer.
    fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let (status, _, text) = self.request("POST", path, &body.to_string());
        let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text:?}"));
        (status, v)
    }

    /// POST with `"stream": true`; the `data:` payloads.
    fn stream(&self, path: &str, body: &Value) -> Vec<String> {
        let (status, head, text) = self.request("POST", path, &body.to_string());
        assert_eq!(status, 200, "{text}");
        assert!(head.contains("content-type: text/event-stream"), "{head}");
        text.split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| e.strip_prefix("data: ").expect("a data event").to_string())
            .collect()
    }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").expect("chunk size line");
        let n = usize::from_str_radix(size, 16).unwrap();
        if n == 0 {
            return out;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].strip_prefix("\r\n").expect("chunk end");
    }
}

/// `kiln run`'s generated text for the same settings (greedy, so equal).
fn kiln_run(model: &Path, prompt: &str, n: usize, chat: bool) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln"));
    cmd.args(["run", "-m", model.to_str().unwrap(), "-p", prompt])
        .args(["--device", "cpu", "-t", "2", "-c", &N_CTX.to_string()])
        .args(["-n", &n.to_string(), "--temp", "0", "--no-display-prompt"]);
    if chat {
        cmd.arg("--chat");
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    text.strip_suffix('\n').unwrap().to_string()
}

fn assert_error(status: u16, want: u16, v: &Value) {
    assert_eq!(status, want, "{v}");
    assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{v}"
    );
}

fn usage(v: &Value) -> (u64, u64, u64) {
    let u = &v["usage"];
    let n = |k: &str| u[k].as_u64().unwrap_or_else(|| panic!("usage.{k}: {v}"));
    (
        n("prompt_tokens"),
        n("completion_tokens"),
        n("total_tokens"),
    )
}

#[test]
fn serve_end_to_end() {
    let Some(model) = kiln_testkit::default_model() else {
        eprintln!("SKIPPED serve_end_to_end: no default model");
        return;
    };
    let srv = Server::start(&model);

    let (status, _, body) = srv.request("GET", "/health", "");
    assert_eq!((status, body.as_str()), (200, r#"{"status":"ok"}"#));
    let (status, _, body) = srv.request("GET", "/v1/models", "");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status, 200);
    assert_eq!(v["object"], "list");
    assert!(
        v["data"][0]["id"].as_str().is_some_and(|s| !s.is_empty()),
        "{v}"
    );

    // Greedy completion = `kiln run --temp 0`; then again from the cache.
    let prompt = "The capital of France is";
    let n = 6;
    let want = kiln_run(&model, prompt, n, false);
    let req = json!({"prompt": prompt, "max_tokens": n, "temperature": 0});
    let (_, toks) = srv.post(
        "/tokenize",
        &json!({"content": prompt, "add_special": true}),
    );
    let n_prompt = toks["tokens"].as_array().unwrap().len() as u64;
    for pass in 0..2 {
        let (status, v) = srv.post("/v1/completions", &req);
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["object"], "text_completion");
        assert_eq!(v["choices"][0]["text"], want.as_str(), "pass {pass}");
        assert_eq!(v["choices"][0]["finish_reason"], "length");
        assert_eq!(usage(&v), (n_prompt, n as u64, n_prompt + n as u64));
        if pass == 1 {
            // All but the last prompt token came from the cache.
            assert_eq!(v["timings"]["cache_n"], n_prompt - 1, "{v}");
        }
    }

    // Streamed: the pieces add up to the same text, then [DONE].
    let mut s = req.clone();
    s["stream"] = json!(true);
    let events = srv.stream("/v1/completions", &s);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let text: String = chunks
        .iter()
        .map(|c| c["choices"][0]["text"].as_str().unwrap())
        .collect();
    assert_eq!(text, want);
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "length");
    assert!(chunks.iter().all(|c| c["object"] == "text_completion"));

    // A stop string cuts the text before it, streamed or not.
    let chars: Vec<char> = want.chars().collect();
    let stop: String = chars[chars.len() / 2..chars.len() / 2 + 2].iter().collect();
    let cut = &want[..want.find(&stop).unwrap()];
    let mut s = req.clone();
    s["stop"] = json!(["\u{1}never", stop]);
    let (_, v) = srv.post("/v1/completions", &s);
    assert_eq!(v["choices"][0]["text"], cut, "stop {stop:?}");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    s["stream"] = json!(true);
    let events = srv.stream("/v1/completions", &s);
    let text: String = events[..events.len() - 1]
        .iter()
        .map(|e| {
            serde_json::from_str::<Value>(e).unwrap()["choices"][0]["text"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(text, cut);

    // Chat through the template = `kiln run --chat --temp 0`.
    let q = "What is 2+2?";
    let want = kiln_run(&model, q, n, true);
    let req =
        json!({"messages": [{"role": "user", "content": q}], "max_tokens": n, "temperature": 0});
    let (status, v) = srv.post("/v1/chat/completions", &req);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(v["choices"][0]["message"]["content"], want.as_str());
    let finish = v["choices"][0]["finish_reason"].as_str().unwrap();
    assert!(finish == "length" || finish == "stop", "{v}");
    let mut s = req.clone();
    s["stream"] = json!(true);
    let events = srv.stream("/v1/chat/completions", &s);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk"));
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, want);
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        finish
    );

    // Tokenize / detokenize round trip.
    let content = "Hello world, kiln! <|im_start|> ünïcode";
    let (status, v) = srv.post("/tokenize", &json!({ "content": content }));
    assert_eq!(status, 200, "{v}");
    assert!(v["tokens"].as_array().is_some_and(|t| t.len() > 3), "{v}");
    let (status, d) = srv.post("/detokenize", &json!({"tokens": v["tokens"]}));
    assert_eq!(status, 200, "{d}");
    assert_eq!(d["content"], content);

    // Generation runs into the end of the context: "length", with as many
    // tokens as fit (a prompt of token ids, EOG ignored).
    let ids: Vec<u64> = toks["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap())
        .collect();
    let long: Vec<u64> = ids.iter().cycle().take(N_CTX - 4).copied().collect();
    let (status, v) = srv.post(
        "/v1/completions",
        &json!({"prompt": long, "max_tokens": 50, "temperature": 0, "ignore_eos": true}),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(usage(&v).1, 5, "{v}");

    // Bad requests: a 4xx with the error object, and the server goes on.
    let (status, _, body) = srv.request("POST", "/v1/completions", "{\"prompt\": ");
    assert_error(status, 400, &serde_json::from_str(&body).unwrap());
    let (status, v) = srv.post(
        "/v1/completions",
        &json!({"prompt": "a", "max_tokens": "x"}),
    );
    assert_error(status, 400, &v);
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("max_tokens"));
    let (status, v) = srv.post("/v1/chat/completions", &json!({"messages": "hi"}));
    assert_error(status, 400, &v);
    let (status, v) = srv.post(
        "/v1/completions",
        &json!({"prompt": "hello ".repeat(2 * N_CTX)}),
    );
    assert_error(status, 400, &v);
    assert!(
        v["error"]["message"].as_str().unwrap().contains("context"),
        "{v}"
    );
    let (status, _, body) = srv.request("GET", "/no/such/path", "");
    assert_error(status, 404, &serde_json::from_str(&body).unwrap());
    let (status, head, body) = srv.request("GET", "/v1/completions", "");
    assert_error(status, 405, &serde_json::from_str(&body).unwrap());
    assert!(head.contains("allow: post"), "{head}");
    let (status, _, body) = srv.raw(
        b"POST /v1/completions HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
    );
    assert_error(status, 411, &serde_json::from_str(&body).unwrap());
    let (status, _, body) =
        srv.raw(b"POST /tokenize HTTP/1.1\r\nContent-Length: 999999999\r\n\r\n");
    assert_error(status, 413, &serde_json::from_str(&body).unwrap());

    let (status, _, _) = srv.request("GET", "/health", "");
    assert_eq!(status, 200);
    // max_tokens 0 only fills the cache; the next request reuses it.
    let (status, v) = srv.post(
        "/v1/completions",
        &json!({"prompt": prompt, "max_tokens": 0}),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["choices"][0]["text"], "");
    assert_eq!(usage(&v), (n_prompt, 0, n_prompt));
    let (status, v) = srv.post(
        "/v1/completions",
        &json!({"prompt": prompt, "max_tokens": 1}),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(usage(&v).1, 1);
    assert_eq!(v["timings"]["cache_n"], n_prompt - 1, "{v}");

    // Each of the 8 bad requests left one line on stderr; nothing panicked.
    let mut log = Vec::new();
    let is_err = |l: &String| l.contains(" -> 4") || l.contains("bad request: 4");
    while log.iter().filter(|l| is_err(l)).count() < 8 {
        match srv.log.recv_timeout(Duration::from_secs(10)) {
            Ok(l) => log.push(l),
            Err(_) => break,
        }
    }
    log.extend(srv.log.try_iter());
    assert_eq!(log.iter().filter(|l| is_err(l)).count(), 8, "{log:#?}");
    assert!(
        !log.iter()
            .any(|l| l.contains("panicked") || l.contains("internal error")),
        "{log:#?}"
    );
}

#[test]
fn serve_without_a_model_fails_cleanly() {
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["serve", "-m", "/no/such/model.gguf", "--port", "0"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(!err.contains("panicked"), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(lines[0].contains("/no/such/model.gguf"), "{err}");
}
