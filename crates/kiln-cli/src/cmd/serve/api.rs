//! The JSON side of `kiln serve`: request bodies of the OpenAI-style
//! endpoints read into typed requests (every bad field a 400 naming it),
//! and the response and stream-chunk objects.

use kiln_models::chat::ChatMessage;
use kiln_models::sampler::{SamplerError, SamplerParams};
use serde_json::{json, Map, Value};

/// An error answered as `{"error": {"message", "type", "code"}}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
}

impl ApiError {
    /// A 400: the request is wrong.
    pub fn bad(message: impl Into<String>) -> Self {
        Self::new(400, message)
    }

    pub fn new(status: u16, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    /// The error object (OpenAI's shape; `code` is the HTTP status, as
    /// llama.cpp's server sends it).
    pub fn to_json(&self) -> Value {
        let kind = match self.status {
            400..=499 => "invalid_request_error",
            503 => "unavailable_error",
            _ => "server_error",
        };
        json!({"error": {"message": self.message, "type": kind, "code": self.status}})
    }
}

type Res<T> = Result<T, ApiError>;

/// What to condition on.
#[derive(Debug, Clone, PartialEq)]
pub enum Prompt {
    /// Text, tokenized with special tokens recognized (as llama.cpp's server does).
    Text(String),
    /// Token ids as given.
    Tokens(Vec<u32>),
    /// A conversation, rendered with the model's chat template.
    Chat(Vec<ChatMessage>),
}

/// A completion or chat completion request.
#[derive(Debug, Clone, PartialEq)]
pub struct GenRequest {
    pub prompt: Prompt,
    /// Most tokens to generate; `None`: until the context is full.
    pub max_tokens: Option<usize>,
    pub sampler: SamplerParams,
    /// Stop strings: the text ends before the first occurrence of any.
    pub stop: Vec<String>,
    pub stream: bool,
    pub ignore_eos: bool,
}

/// Sampling settings of requests that do not give them.
#[derive(Debug, Clone, Copy)]
pub struct Defaults {
    pub sampler: SamplerParams,
    /// `--seed`; `None`: a fresh seed per request.
    pub seed: Option<u64>,
}

/// The body parsed as a JSON object.
pub fn object(body: &[u8]) -> Res<Map<String, Value>> {
    if body.is_empty() {
        return Err(ApiError::bad("empty request body: expected a JSON object"));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::bad("the request body must be a JSON object")),
        Err(e) => Err(ApiError::bad(format!(
            "invalid JSON in the request body: {e}"
        ))),
    }
}

fn present<'a>(o: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    o.get(key).filter(|v| !v.is_null())
}

fn type_err(key: &str, want: &str, got: &Value) -> ApiError {
    let got = match got {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    ApiError::bad(format!("`{key}` must be {want}, got {got}"))
}

/// A string field that must be there.
pub fn req_str(o: &Map<String, Value>, key: &str) -> Res<String> {
    match o.get(key) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(v) => Err(type_err(key, "a string", v)),
        None => Err(ApiError::bad(format!("missing `{key}`"))),
    }
}

pub fn opt_bool(o: &Map<String, Value>, key: &str) -> Res<Option<bool>> {
    present(o, key)
        .map(|v| v.as_bool().ok_or_else(|| type_err(key, "a boolean", v)))
        .transpose()
}

pub fn opt_f32(o: &Map<String, Value>, key: &str) -> Res<Option<f32>> {
    present(o, key)
        .map(|v| {
            v.as_f64()
                .map(|x| x as f32)
                .ok_or_else(|| type_err(key, "a number", v))
        })
        .transpose()
}

pub fn opt_int(o: &Map<String, Value>, key: &str) -> Res<Option<i64>> {
    present(o, key)
        .map(|v| match v.as_i64() {
            Some(x) => Ok(x),
            None if v.is_u64() => Err(ApiError::bad(format!("`{key}` is too large: {v}"))),
            None => Err(type_err(key, "an integer", v)),
        })
        .transpose()
}

fn first_int(o: &Map<String, Value>, keys: &[&str]) -> Res<Option<(i64, String)>> {
    for k in keys {
        if let Some(x) = opt_int(o, k)? {
            return Ok(Some((x, k.to_string())));
        }
    }
    Ok(None)
}

/// A list of token ids (each in `0..2^32`).
pub fn token_ids(key: &str, v: &Value) -> Res<Vec<u32>> {
    let Value::Array(a) = v else {
        return Err(type_err(key, "an array of token ids", v));
    };
    a.iter()
        .map(|t| {
            t.as_u64()
                .and_then(|x| u32::try_from(x).ok())
                .ok_or_else(|| ApiError::bad(format!("`{key}` holds {t}, not a token id")))
        })
        .collect()
}

/// A per-request seed: the request's (negative: random), else the server's
/// `--seed`, else random.
fn seed(o: &Map<String, Value>, d: &Defaults) -> Res<u64> {
    let random = || {
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        t ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15)
    };
    Ok(match opt_int(o, "seed")? {
        Some(s) if s >= 0 => s as u64,
        Some(_) => random(),
        None => d.seed.unwrap_or_else(random),
    })
}

/// The fields both endpoints share: sampling, length, stop, stream.
fn common(o: &Map<String, Value>, d: &Defaults, prompt: Prompt) -> Res<GenRequest> {
    if let Some(n) = opt_int(o, "n")? {
        if n != 1 {
            return Err(ApiError::bad(format!(
                "`n` = {n}: only one choice (n = 1) is supported"
            )));
        }
    }
    let mut s = d.sampler;
    if let Some(t) = opt_f32(o, "temperature")? {
        s.temperature = t;
    }
    if let Some(k) = opt_int(o, "top_k")? {
        // llama.cpp: top_k <= 0 turns it off.
        s.top_k = usize::try_from(k).unwrap_or(0);
    }
    if let Some(p) = opt_f32(o, "top_p")? {
        s.top_p = p;
    }
    if let Some(p) = opt_f32(o, "min_p")? {
        s.min_p = p;
    }
    if let Some(r) = opt_f32(o, "repeat_penalty")? {
        s.repeat_penalty = r;
    }
    if let Some(n) = opt_int(o, "repeat_last_n")? {
        s.repeat_last_n = usize::try_from(n)
            .map_err(|_| ApiError::bad(format!("`repeat_last_n` must be >= 0, got {n}")))?;
    }
    s.seed = seed(o, d)?;
    if let Err(e) = s.validate() {
        return Err(ApiError::bad(match e {
            SamplerError::InvalidParam {
                flag,
                value,
                expected,
            } => {
                let field = match flag {
                    "--temp" => "temperature",
                    "--top-p" => "top_p",
                    "--min-p" => "min_p",
                    "--repeat-penalty" => "repeat_penalty",
                    other => other,
                };
                format!("`{field}` = {value}: expected {expected}")
            }
            other => other.to_string(),
        }));
    }
    let max_tokens = match first_int(o, &["max_tokens", "max_completion_tokens", "n_predict"])? {
        // llama.cpp: a negative n_predict means no limit.
        Some((n, _)) if n < 0 => None,
        Some((n, _)) => Some(n as usize),
        None => match prompt {
            // OpenAI's default for completions; chats run to the end.
            Prompt::Text(_) | Prompt::Tokens(_) => Some(16),
            Prompt::Chat(_) => None,
        },
    };
    let stop = match present(o, "stop") {
        None => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| type_err("stop", "a string or an array of strings", v))
            })
            .collect::<Res<Vec<_>>>()?,
        Some(v) => return Err(type_err("stop", "a string or an array of strings", v)),
    };
    Ok(GenRequest {
        prompt,
        max_tokens,
        sampler: s,
        stop: stop.into_iter().filter(|s| !s.is_empty()).collect(),
        stream: opt_bool(o, "stream")?.unwrap_or(false),
        ignore_eos: opt_bool(o, "ignore_eos")?.unwrap_or(false),
    })
}

/// `POST /v1/completions`: `prompt` is a string, a one-string array, or
/// token ids.
pub fn completion_request(body: &[u8], d: &Defaults) -> Res<GenRequest> {
    let o = object(body)?;
    let want = "a string, an array of one string, or an array of token ids";
    let prompt = match present(&o, "prompt") {
        None => return Err(ApiError::bad("missing `prompt`")),
        Some(Value::String(s)) => Prompt::Text(s.clone()),
        Some(v @ Value::Array(a)) => match a.as_slice() {
            [Value::String(s)] => Prompt::Text(s.clone()),
            [Value::String(_), ..] => {
                return Err(ApiError::bad(format!(
                    "`prompt` holds {} strings: only one prompt per request is supported",
                    a.len()
                )))
            }
            _ => Prompt::Tokens(token_ids("prompt", v)?),
        },
        Some(v) => return Err(type_err("prompt", want, v)),
    };
    common(&o, d, prompt)
}

/// A message's `content`: a string, null (an empty turn), or an array of
/// `{"type": "text", "text": ...}` parts (joined).
fn content(i: usize, v: Option<&Value>) -> Res<String> {
    let key = format!("messages[{i}].content");
    match v {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => {
            let mut out = String::new();
            for p in parts {
                match (p.get("type").and_then(Value::as_str), p.get("text")) {
                    (Some("text"), Some(Value::String(t))) => out.push_str(t),
                    (Some(ty), _) if ty != "text" => {
                        return Err(ApiError::bad(format!(
                            "`{key}` has a part of type {ty:?}: only text is supported"
                        )))
                    }
                    _ => {
                        return Err(ApiError::bad(format!(
                            "`{key}` parts must be {{\"type\": \"text\", \"text\": string}}"
                        )))
                    }
                }
            }
            Ok(out)
        }
        Some(v) => Err(type_err(&key, "a string or an array of text parts", v)),
    }
}

/// `POST /v1/chat/completions`: `messages` is a non-empty array of
/// `{role, content}`.
pub fn chat_request(body: &[u8], d: &Defaults) -> Res<GenRequest> {
    let o = object(body)?;
    let msgs = match present(&o, "messages") {
        None => return Err(ApiError::bad("missing `messages`")),
        Some(Value::Array(a)) if a.is_empty() => return Err(ApiError::bad("`messages` is empty")),
        Some(Value::Array(a)) => a,
        Some(v) => return Err(type_err("messages", "an array of messages", v)),
    };
    let mut out = Vec::with_capacity(msgs.len());
    for (i, m) in msgs.iter().enumerate() {
        let Value::Object(m) = m else {
            return Err(type_err(&format!("messages[{i}]"), "an object", m));
        };
        let role = match m.get("role") {
            Some(Value::String(r)) => r.clone(),
            Some(v) => return Err(type_err(&format!("messages[{i}].role"), "a string", v)),
            None => return Err(ApiError::bad(format!("`messages[{i}]` has no `role`"))),
        };
        out.push(ChatMessage::new(role, content(i, m.get("content"))?));
    }
    common(&o, d, Prompt::Chat(out))
}

/// Token counts of a finished request.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    pub prompt_tokens: usize,
    /// Prompt tokens whose cache entries were reused from the last request.
    pub cached_tokens: usize,
    pub completion_tokens: usize,
    pub prompt_ms: f64,
    pub gen_ms: f64,
}

impl Usage {
    fn json(&self) -> Value {
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        })
    }

    /// llama.cpp's `timings` object (`prompt_n`: prompt tokens processed,
    /// i.e. not taken from the cache).
    fn timings(&self) -> Value {
        let per_s = |n: usize, ms: f64| if ms > 0.0 { n as f64 * 1e3 / ms } else { 0.0 };
        let prompt_n = self.prompt_tokens - self.cached_tokens;
        json!({
            "cache_n": self.cached_tokens,
            "prompt_n": prompt_n,
            "prompt_ms": self.prompt_ms,
            "prompt_per_second": per_s(prompt_n, self.prompt_ms),
            "predicted_n": self.completion_tokens,
            "predicted_ms": self.gen_ms,
            "predicted_per_second": per_s(self.completion_tokens, self.gen_ms),
        })
    }
}

/// Which endpoint's objects to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    Chat,
}

/// What every object of one response shares.
#[derive(Debug, Clone)]
pub struct Meta {
    pub kind: Kind,
    pub id: String,
    pub created: u64,
    pub model: String,
}

impl Meta {
    fn base(&self, object: &str, choice: Value) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("id".into(), json!(self.id));
        m.insert("object".into(), json!(object));
        m.insert("created".into(), json!(self.created));
        m.insert("model".into(), json!(self.model));
        m.insert("choices".into(), json!([choice]));
        m
    }

    /// The whole (non-streamed) response.
    pub fn response(&self, text: &str, finish: &str, u: &Usage) -> Value {
        let (object, choice) = match self.kind {
            Kind::Text => (
                "text_completion",
                json!({"index": 0, "text": text, "logprobs": null, "finish_reason": finish}),
            ),
            Kind::Chat => (
                "chat.completion",
                json!({"index": 0, "message": {"role": "assistant", "content": text},
                       "logprobs": null, "finish_reason": finish}),
            ),
        };
        let mut m = self.base(object, choice);
        m.insert("usage".into(), u.json());
        m.insert("timings".into(), u.timings());
        Value::Object(m)
    }

    fn chunk(&self, text: Option<&str>, first: bool, finish: Option<&str>) -> Map<String, Value> {
        match self.kind {
            Kind::Text => self.base(
                "text_completion",
                json!({"index": 0, "text": text.unwrap_or(""), "logprobs": null,
                       "finish_reason": finish}),
            ),
            Kind::Chat => {
                let mut delta = Map::new();
                if first {
                    delta.insert("role".into(), json!("assistant"));
                }
                if let Some(t) = text {
                    delta.insert("content".into(), json!(t));
                }
                self.base(
                    "chat.completion.chunk",
                    json!({"index": 0, "delta": delta, "logprobs": null,
                           "finish_reason": finish}),
                )
            }
        }
    }

    /// The chunk that opens a chat stream (`delta.role`), if the kind has one.
    pub fn opening_chunk(&self) -> Option<Value> {
        (self.kind == Kind::Chat).then(|| Value::Object(self.chunk(Some(""), true, None)))
    }

    /// A chunk carrying a piece of text.
    pub fn text_chunk(&self, text: &str) -> Value {
        Value::Object(self.chunk(Some(text), false, None))
    }

    /// The last chunk: the finish reason, usage and timings.
    pub fn final_chunk(&self, finish: &str, u: &Usage) -> Value {
        let mut m = self.chunk(None, false, Some(finish));
        m.insert("usage".into(), u.json());
        m.insert("timings".into(), u.timings());
        Value::Object(m)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    fn d() -> Defaults {
        Defaults {
            sampler: SamplerParams::default(),
            seed: Some(7),
        }
    }

    fn err(r: Res<GenRequest>) -> String {
        let e = r.unwrap_err();
        assert_eq!(e.status, 400);
        e.message
    }

    #[test]
    fn completion_fields() {
        let r = completion_request(
            br#"{"prompt":"hi","n_predict":5,"temperature":0,"top_k":-1,"stop":"\n","stream":true}"#,
            &d(),
        )
        .unwrap();
        assert_eq!(r.prompt, Prompt::Text("hi".into()));
        assert_eq!(r.max_tokens, Some(5));
        assert_eq!(r.sampler.temperature, 0.0);
        assert_eq!(r.sampler.top_k, 0);
        assert_eq!(r.sampler.seed, 7);
        assert_eq!(r.stop, vec!["\n".to_string()]);
        assert!(r.stream);
        let r = completion_request(br#"{"prompt":[1,2,3],"max_tokens":-1}"#, &d()).unwrap();
        assert_eq!(r.prompt, Prompt::Tokens(vec![1, 2, 3]));
        assert_eq!(r.max_tokens, None);
        let r = completion_request(br#"{"prompt":"x"}"#, &d()).unwrap();
        assert_eq!(r.max_tokens, Some(16));
    }

    #[test]
    fn chat_fields() {
        let r = chat_request(
            br#"{"messages":[{"role":"system","content":null},
                {"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}]}"#,
            &d(),
        )
        .unwrap();
        assert_eq!(
            r.prompt,
            Prompt::Chat(vec![
                ChatMessage::new("system", ""),
                ChatMessage::new("user", "ab")
            ])
        );
        assert_eq!(r.max_tokens, None);
    }

    #[test]
    fn bad_fields_name_themselves() {
        assert!(err(completion_request(b"{nope", &d())).contains("invalid JSON"));
        assert!(err(completion_request(b"[]", &d())).contains("JSON object"));
        assert!(err(completion_request(b"", &d())).contains("empty"));
        assert!(err(completion_request(br#"{"x":1}"#, &d())).contains("`prompt`"));
        assert!(err(completion_request(br#"{"prompt":5}"#, &d())).contains("`prompt`"));
        assert!(err(completion_request(br#"{"prompt":[-1]}"#, &d())).contains("token id"));
        let m = err(completion_request(
            br#"{"prompt":"a","max_tokens":"x"}"#,
            &d(),
        ));
        assert!(m.contains("`max_tokens`") && m.contains("a string"), "{m}");
        let m = err(completion_request(
            br#"{"prompt":"a","temperature":-1}"#,
            &d(),
        ));
        assert!(m.contains("`temperature`"), "{m}");
        let m = err(completion_request(br#"{"prompt":"a","top_p":2}"#, &d()));
        assert!(m.contains("`top_p`"), "{m}");
        assert!(err(completion_request(br#"{"prompt":"a","stop":[1]}"#, &d())).contains("`stop`"));
        assert!(err(completion_request(br#"{"prompt":"a","n":2}"#, &d())).contains("`n`"));
        assert!(err(chat_request(br#"{"messages":[]}"#, &d())).contains("empty"));
        assert!(err(chat_request(br#"{"messages":[{"content":"a"}]}"#, &d())).contains("role"));
        let m = err(chat_request(
            br#"{"messages":[{"role":"user","content":[{"type":"image_url"}]}]}"#,
            &d(),
        ));
        assert!(m.contains("image_url"), "{m}");
    }

    #[test]
    fn error_shape() {
        let v = ApiError::bad("x").to_json();
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["message"], "x");
        assert_eq!(v["error"]["code"], 400);
    }
}
