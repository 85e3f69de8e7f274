//! Chat templates: the GGUF `tokenizer.chat_template` Jinja string rendered
//! with minijinja the way Hugging Face transformers renders it
//! (`PreTrainedTokenizerBase.apply_chat_template` / `_compile_jinja_template`).
//!
//! HF's environment, reproduced here:
//! - `trim_blocks = True`, `lstrip_blocks = True`, trailing newline dropped,
//!   `break` / `continue` (jinja2's loopcontrols extension);
//! - variables `messages` (list of `{role, content}`), `add_generation_prompt`,
//!   `bos_token`, `eos_token`;
//! - `raise_exception(msg)` aborts rendering with `msg` ([`ChatError::Raised`]);
//! - `tojson` is Python's `json.dumps(x, ensure_ascii=False, indent=None,
//!   separators=None, sort_keys=False)` — no HTML escaping, Python spacing;
//! - `strftime_now(fmt)` formats the current UTC time (HF uses local time);
//! - Python string / dict / list methods (`.strip()`, `.startswith()`,
//!   `.split()`, `.items()`, `.get()`...) through minijinja-contrib's pycompat.
//!
//! Not supported: HF's `{% generation %}` block (AssistantTracker, used only
//! for training masks), and extra render variables such as `tools`.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use minijinja::value::{Kwargs, ValueKind};
use minijinja::{context, Environment, ErrorKind, Value};
use serde::{Deserialize, Serialize};

/// Name of the one template inside a [`ChatTemplate`]'s environment.
const TEMPLATE_NAME: &str = "chat_template";

/// Errors from compiling or rendering a chat template.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ChatError {
    /// The template does not parse.
    #[error("chat template syntax error: {0}")]
    Syntax(String),
    /// Rendering failed inside the template engine.
    #[error("chat template render error: {0}")]
    Render(String),
    /// The template called `raise_exception(msg)`.
    #[error("chat template rejected the conversation: {0}")]
    Raised(String),
}

/// One chat turn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant` (or whatever roles the template knows).
    pub role: String,
    /// The text of the turn.
    pub content: String,
}

impl ChatMessage {
    /// Build a message from a role and its content.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// A compiled chat template with the special tokens it may print.
#[derive(Debug, Clone)]
pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
}

/// The ChatML template used when a model file carries none.
pub const CHATML_TEMPLATE: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// Fallback when a file has no template: ChatML (bos empty, eos `<|im_end|>`).
pub fn chatml() -> ChatTemplate {
    match ChatTemplate::new(CHATML_TEMPLATE, "", "<|im_end|>") {
        Ok(t) => t,
        // Unreachable: the constant parses (tested). An environment with no
        // template still renders to an error instead of panicking.
        Err(_) => ChatTemplate {
            env: hf_environment(),
            bos_token: String::new(),
            eos_token: "<|im_end|>".into(),
        },
    }
}

/// Gemma's turn format, for Gemma files without a template (the Gemma 3
/// 270M GGUF has none), written from Google's published prompt format:
/// each turn is `<start_of_turn>{role}\n{content}<end_of_turn>\n` with the
/// roles `user` and `model` (`assistant` is written as `model`); Gemma has
/// no system role, so system text goes at the start of the next user turn
/// followed by a blank line; the generation prompt is
/// `<start_of_turn>model\n`. No BOS: the tokenizer adds it (the file says
/// `add_bos_token`).
pub const GEMMA_TEMPLATE: &str = "{% set ns = namespace(system='') %}\
{% for message in messages %}\
{% if message['role'] == 'system' %}{% set ns.system = ns.system + message['content'] + '\n\n' %}\
{% else %}{% if message['role'] == 'assistant' %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}\
{{ '<start_of_turn>' + role + '\n' }}{% if role == 'user' %}{{ ns.system }}{% set ns.system = '' %}{% endif %}\
{{ message['content'] }}{{ '<end_of_turn>\n' }}{% endif %}\
{% endfor %}\
{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}";

/// [`GEMMA_TEMPLATE`] compiled (bos empty, eos `<end_of_turn>`).
pub fn gemma_turns() -> Result<ChatTemplate, ChatError> {
    ChatTemplate::new(GEMMA_TEMPLATE, "", "<end_of_turn>")
}

impl ChatTemplate {
    /// Compile `source` (a Jinja chat template) with HF's settings.
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<Self, ChatError> {
        let mut env = hf_environment();
        env.add_template_owned(TEMPLATE_NAME, source.to_owned())
            .map_err(|e| ChatError::Syntax(one_line(&e)))?;
        Ok(Self {
            env,
            bos_token: bos_token.to_owned(),
            eos_token: eos_token.to_owned(),
        })
    }

    /// Render a conversation into the model's prompt text.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, ChatError> {
        let tmpl = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| ChatError::Render(one_line(&e)))?;
        let ctx = context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token.as_str(),
            eos_token => self.eos_token.as_str(),
        };
        tmpl.render(ctx).map_err(|e| match raised_message(&e) {
            Some(msg) => ChatError::Raised(msg),
            None => ChatError::Render(one_line(&e)),
        })
    }

    /// The beginning-of-sequence token text the template sees.
    pub fn bos_token(&self) -> &str {
        &self.bos_token
    }

    /// The end-of-sequence token text the template sees.
    pub fn eos_token(&self) -> &str {
        &self.eos_token
    }
}

/// The message of a `raise_exception` call, carried as the error's source.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Raised(String);

/// An environment configured as HF's `ImmutableSandboxedEnvironment`.
fn hf_environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_keep_trailing_newline(false);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function(
        "raise_exception",
        |msg: String| -> Result<Value, minijinja::Error> {
            Err(
                minijinja::Error::new(ErrorKind::InvalidOperation, msg.clone())
                    .with_source(Raised(msg)),
            )
        },
    );
    env.add_function("strftime_now", |fmt: String| -> String {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        strftime_utc(secs, &fmt)
    });
    env.add_filter("tojson", tojson);
    env
}

/// Find a `raise_exception` message in the error's source chain.
fn raised_message(err: &minijinja::Error) -> Option<String> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(r) = e.downcast_ref::<Raised>() {
            return Some(r.0.clone());
        }
        cur = e.source();
    }
    None
}

/// Error text on one line, with the template location minijinja gives.
fn one_line(err: &minijinja::Error) -> String {
    let s = err.to_string();
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Options of Python's `json.dumps` that HF's `tojson` exposes.
struct JsonOpts {
    indent: Option<String>,
    item_sep: String,
    key_sep: String,
    sort_keys: bool,
    ensure_ascii: bool,
}

/// HF's `tojson` filter: `json.dumps(x, ensure_ascii=False, indent=None,
/// separators=None, sort_keys=False)` with those keyword arguments.
fn tojson(value: &Value, kwargs: Kwargs) -> Result<Value, minijinja::Error> {
    let indent = match kwargs.get::<Option<Value>>("indent")? {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) => match v.kind() {
            ValueKind::String => Some(v.as_str().unwrap_or_default().to_owned()),
            _ => Some(" ".repeat(v.as_usize().unwrap_or(0))),
        },
    };
    let (item_sep, key_sep) = match kwargs.get::<Option<Vec<String>>>("separators")? {
        Some(seps) if seps.len() == 2 => (seps[0].clone(), seps[1].clone()),
        Some(seps) => {
            return Err(minijinja::Error::new(
                ErrorKind::InvalidOperation,
                format!("tojson: separators must be 2 strings, got {}", seps.len()),
            ))
        }
        // Python's defaults: ", " without indent, "," with it.
        None if indent.is_some() => (",".to_owned(), ": ".to_owned()),
        None => (", ".to_owned(), ": ".to_owned()),
    };
    let opts = JsonOpts {
        indent,
        item_sep,
        key_sep,
        sort_keys: kwargs.get::<Option<bool>>("sort_keys")?.unwrap_or(false),
        ensure_ascii: kwargs.get::<Option<bool>>("ensure_ascii")?.unwrap_or(false),
    };
    kwargs.assert_all_used()?;
    let mut out = String::new();
    write_json(&mut out, value, &opts, 0)?;
    Ok(Value::from_safe_string(out))
}

/// Newline plus indentation for `depth`, when indenting.
fn newline(out: &mut String, opts: &JsonOpts, depth: usize) {
    if let Some(ind) = &opts.indent {
        out.push('\n');
        for _ in 0..depth {
            out.push_str(ind);
        }
    }
}

/// Serialize a template value as Python's `json.dumps` would.
fn write_json(
    out: &mut String,
    v: &Value,
    opts: &JsonOpts,
    depth: usize,
) -> Result<(), minijinja::Error> {
    match v.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
        ValueKind::Number if v.is_integer() => {
            let _ = write!(out, "{v}");
        }
        ValueKind::Number => {
            let f = f64::try_from(v.clone()).unwrap_or(f64::NAN);
            out.push_str(&python_float_repr(f));
        }
        ValueKind::String => write_json_str(out, v.as_str().unwrap_or_default(), opts),
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = v.try_iter()?.collect();
            write_container(out, opts, depth, ('[', ']'), &items, |out, item| {
                write_json(out, item, opts, depth + 1)
            })?;
        }
        ValueKind::Map => {
            let mut keys: Vec<Value> = v.try_iter()?.collect();
            if opts.sort_keys {
                keys.sort();
            }
            write_container(out, opts, depth, ('{', '}'), &keys, |out, key| {
                match key.as_str() {
                    Some(s) => write_json_str(out, s, opts),
                    // Python converts int / float / bool / None keys to strings.
                    None => write_json_str(out, &key_as_string(key), opts),
                }
                out.push_str(&opts.key_sep);
                write_json(out, &v.get_item(key)?, opts, depth + 1)
            })?;
        }
        _ => {
            return Err(minijinja::Error::new(
                ErrorKind::InvalidOperation,
                format!("tojson: cannot serialize a value of kind {}", v.kind()),
            ))
        }
    }
    Ok(())
}

/// `[a, b]` / `{k: v}` with Python's separators and indentation.
fn write_container(
    out: &mut String,
    opts: &JsonOpts,
    depth: usize,
    (open, close): (char, char),
    items: &[Value],
    mut each: impl FnMut(&mut String, &Value) -> Result<(), minijinja::Error>,
) -> Result<(), minijinja::Error> {
    out.push(open);
    if items.is_empty() {
        out.push(close);
        return Ok(());
    }
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(&opts.item_sep);
        }
        newline(out, opts, depth + 1);
        each(out, item)?;
    }
    newline(out, opts, depth);
    out.push(close);
    Ok(())
}

/// Python's `str()` of a non-string dict key as json.dumps writes it.
fn key_as_string(key: &Value) -> String {
    match key.kind() {
        ValueKind::None | ValueKind::Undefined => "null".into(),
        ValueKind::Bool => (if key.is_true() { "true" } else { "false" }).into(),
        ValueKind::Number if !key.is_integer() => {
            python_float_repr(f64::try_from(key.clone()).unwrap_or(f64::NAN))
        }
        _ => key.to_string(),
    }
}

/// A JSON string literal with Python's escapes.
fn write_json_str(out: &mut String, s: &str, opts: &JsonOpts) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c if opts.ensure_ascii && (c as u32) > 0x7e => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Python's `repr(float)` as json.dumps writes it: shortest round-trip
/// digits, positional for exponents in [-4, 16), else `d.ddde±XX`.
fn python_float_repr(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    // Rust's `{:e}` gives the shortest round-trip digits: "-1.25e-7".
    let sci = format!("{f:e}");
    let (mant, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mant) = match mant.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mant),
    };
    let digits: String = mant.chars().filter(|c| c.is_ascii_digit()).collect();
    if (-4..16).contains(&exp) {
        let n = digits.len() as i32;
        let (int, frac) = if exp >= 0 {
            let split = (exp + 1) as usize;
            if split >= digits.len() {
                let zeros = "0".repeat((exp + 1 - n) as usize);
                (format!("{digits}{zeros}"), "0".to_owned())
            } else {
                (digits[..split].to_owned(), digits[split..].to_owned())
            }
        } else {
            let zeros = "0".repeat((-exp - 1) as usize);
            ("0".to_owned(), format!("{zeros}{digits}"))
        };
        format!("{sign}{int}.{frac}")
    } else {
        let esign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{mant}e{esign}{:02}", exp.abs())
    }
}

/// `strftime` of a UTC Unix time, for the directives chat templates use:
/// `%d %m %Y %y %b %B %a %A %H %M %S %j %%`; others are copied verbatim.
pub fn strftime_utc(unix_secs: i64, fmt: &str) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const DAYS: [&str; 7] = [
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
    ];
    let days = unix_secs.div_euclid(86_400);
    let secs = unix_secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    // 1970-01-01 was a Thursday (index 3 from Monday).
    let weekday = (days + 3).rem_euclid(7) as usize;
    let yday = days - days_from_civil(year, 1, 1) + 1;
    let month_name = MONTHS[(month - 1) as usize % 12];
    let day_name = DAYS[weekday % 7];
    let mut out = String::new();
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let _ = match chars.next() {
            Some('d') => write!(out, "{day:02}"),
            Some('m') => write!(out, "{month:02}"),
            Some('Y') => write!(out, "{year}"),
            Some('y') => write!(out, "{:02}", year.rem_euclid(100)),
            Some('b') => write!(out, "{}", &month_name[..3]),
            Some('B') => write!(out, "{month_name}"),
            Some('a') => write!(out, "{}", &day_name[..3]),
            Some('A') => write!(out, "{day_name}"),
            Some('H') => write!(out, "{:02}", secs / 3600),
            Some('M') => write!(out, "{:02}", secs / 60 % 60),
            Some('S') => write!(out, "{:02}", secs % 60),
            Some('j') => write!(out, "{yday:03}"),
            Some('%') => write!(out, "%"),
            Some(other) => write!(out, "%{other}"),
            None => write!(out, "%"),
        };
    }
    out
}

/// Days since 1970-01-01 → (year, month 1..=12, day 1..=31), proleptic Gregorian.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// (year, month, day) → days since 1970-01-01, proleptic Gregorian.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}
