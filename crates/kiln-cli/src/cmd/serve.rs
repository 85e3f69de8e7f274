//! `kiln serve`: an HTTP server with the llama.cpp-server / OpenAI
//! endpoints `GET /health`, `GET /v1/models`, `POST /v1/completions`,
//! `POST /v1/chat/completions` (both with `"stream": true` as Server-Sent
//! Events), `POST /tokenize` and `POST /detokenize`.
//!
//! Threads: the main thread loads the model and then runs the [`Engine`],
//! one job at a time; an acceptor thread starts a thread per connection
//! (at most [`MAX_CONNECTIONS`] at once); a connection thread reads
//! requests (`http`), parses them (`api`) and hands the model work to the
//! engine over a channel, getting text back over another as it is made.
//! `/health` and `/v1/models` never wait for the engine.

mod api;
mod engine;
mod http;

use crate::common::{context_size, ModelArgs, SampleArgs};
use anyhow::{Context, Result};
use api::{ApiError, Defaults, GenRequest, Kind, Meta, Usage};
use clap::Args;
use engine::{Engine, Event, Job};
use http::{EventStream, ReadOutcome, Request, Response};
use kiln_models::model::DEFAULT_BATCH;
use serde_json::{json, Value};
use std::io::BufReader;
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Connections served at once; more are answered 503 and closed.
const MAX_CONNECTIONS: usize = 64;
/// How long a connection may sit idle between requests, or stall inside one.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a write may block on a client that does not read.
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Default sampling settings (a request's own fields override them).
    #[command(flatten)]
    pub sample: SampleArgs,
    /// Address to listen on.
    #[arg(long = "host", default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on (0: any free port; the address is printed).
    #[arg(long = "port", default_value_t = 8080)]
    pub port: u16,
    /// Context size (0 = the model's, capped at 4096).
    #[arg(short = 'c', long = "ctx-size", default_value_t = 0)]
    pub ctx: usize,
    /// Tokens per prompt-processing batch.
    #[arg(short = 'b', long = "batch-size", default_value_t = DEFAULT_BATCH)]
    pub batch: usize,
}

/// What connection threads share.
struct Shared {
    jobs: Sender<Job>,
    defaults: Defaults,
    model_name: String,
    n_ctx: usize,
    n_vocab: usize,
    started: u64,
    active: AtomicUsize,
    next_id: AtomicU64,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub fn run(a: ServeArgs) -> Result<()> {
    anyhow::ensure!(a.batch > 0, "--batch-size must be at least 1");
    // Bind first: a port in use fails before the model loads.
    let listener = TcpListener::bind((a.host.as_str(), a.port))
        .with_context(|| format!("listening on {}:{}", a.host, a.port))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    let params = a.sample.params();
    // Checked now so a bad flag fails at start-up, not per request.
    kiln_models::sampler::Sampler::new(params)?;
    let (stream, model) = a.model.load()?;
    let n_ctx = context_size(a.ctx, &model);
    let st = model.new_state(&stream, n_ctx, a.batch, false)?;
    let model_name = match model.config.name.as_str() {
        "" | "unnamed" => crate::common::model_path(&a.model.model)?
            .file_name()
            .map_or_else(|| "kiln".into(), |s| s.to_string_lossy().into_owned()),
        n => n.to_string(),
    };
    eprintln!(
        "kiln serve: {model_name} on {}, context {n_ctx} ({} KV cache, {:.1} MiB)",
        stream.describe(),
        model.kv_type,
        st.cache.bytes() as f64 / (1 << 20) as f64,
    );
    let (tx, rx) = mpsc::channel::<Job>();
    let shared = Arc::new(Shared {
        jobs: tx,
        defaults: Defaults {
            sampler: params,
            seed: a.sample.seed,
        },
        model_name,
        n_ctx,
        n_vocab: model.tokenizer.n_vocab(),
        started: unix_now(),
        active: AtomicUsize::new(0),
        next_id: AtomicU64::new(1),
    });
    std::thread::Builder::new()
        .name("kiln-accept".into())
        .spawn(move || accept_loop(listener, shared))
        .context("starting the acceptor thread")?;
    eprintln!("kiln serve: listening on http://{addr}");

    let mut engine = Engine { model, stream, st };
    for job in rx {
        // A bug inside one request must not take the server down: its
        // channel closes (the client gets a 500) and the cache is dropped.
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&mut engine)));
        if r.is_err() {
            engine.st.truncate(0);
        }
    }
    Ok(())
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for conn in listener.incoming() {
        let mut sock = match conn {
            Ok(s) => s,
            Err(e) => {
                // Out of file descriptors and the like: back off a little.
                eprintln!("kiln serve: accept failed: {e}");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        if shared.active.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            shared.active.fetch_sub(1, Ordering::SeqCst);
            let e = ApiError::new(503, "too many connections; try again later");
            let _ = sock.set_write_timeout(Some(Duration::from_secs(1)));
            let _ = http::write_response(&mut sock, &Response::json(503, &e.to_json()), false);
            continue;
        }
        let sh = Arc::clone(&shared);
        let spawned = std::thread::Builder::new()
            .name("kiln-conn".into())
            .spawn(move || {
                connection(sock, &sh);
                sh.active.fetch_sub(1, Ordering::SeqCst);
            });
        if let Err(e) = spawned {
            shared.active.fetch_sub(1, Ordering::SeqCst);
            eprintln!("kiln serve: cannot start a connection thread: {e}");
        }
    }
}

/// Serve requests on one connection until it closes.
fn connection(sock: TcpStream, sh: &Shared) {
    let _ = sock.set_read_timeout(Some(READ_TIMEOUT));
    let _ = sock.set_write_timeout(Some(WRITE_TIMEOUT));
    let _ = sock.set_nodelay(true);
    let Ok(read_half) = sock.try_clone() else {
        return;
    };
    let mut r = BufReader::new(read_half);
    let mut w = sock;
    loop {
        let req = match http::read_request(&mut r, &mut w) {
            ReadOutcome::Request(req) => req,
            ReadOutcome::Closed => return,
            ReadOutcome::Error(e) => {
                eprintln!("kiln serve: bad request: {} {}", e.status, e.message);
                let body = ApiError::new(e.status, e.message).to_json();
                let _ = http::write_response(&mut w, &Response::json(e.status, &body), false);
                return;
            }
        };
        if !handle(&req, &mut w, sh) || !req.keep_alive {
            return;
        }
    }
}

/// The method a known path takes; `None` for an unknown path.
fn route(path: &str) -> Option<&'static str> {
    Some(match path {
        "/health" | "/v1/models" | "/models" => "GET",
        "/v1/completions"
        | "/completions"
        | "/v1/chat/completions"
        | "/chat/completions"
        | "/tokenize"
        | "/detokenize" => "POST",
        _ => return None,
    })
}

/// Answer one request; false when the connection cannot carry another.
fn handle(req: &Request, w: &mut TcpStream, sh: &Shared) -> bool {
    let what = format!("{} {}", req.method, req.path);
    let reply =
        |w: &mut TcpStream, resp: Response| http::write_response(w, &resp, req.keep_alive).is_ok();
    let err = |w: &mut TcpStream, e: ApiError, extra: Option<(&'static str, String)>| {
        eprintln!("kiln serve: {what} -> {}: {}", e.status, e.message);
        let mut resp = Response::json(e.status, &e.to_json());
        if let Some((n, v)) = extra {
            resp = resp.with(n, v);
        }
        reply(w, resp)
    };
    let Some(method) = route(&req.path) else {
        return err(
            w,
            ApiError::new(404, format!("no such endpoint: {}", req.path)),
            None,
        );
    };
    if req.method == "OPTIONS" {
        // CORS preflight.
        let resp = Response {
            status: 204,
            content_type: "text/plain",
            body: Vec::new(),
            extra_headers: vec![
                ("Allow", format!("{method}, OPTIONS")),
                ("Access-Control-Allow-Methods", format!("{method}, OPTIONS")),
                (
                    "Access-Control-Allow-Headers",
                    "Content-Type, Authorization".into(),
                ),
            ],
        };
        return reply(w, resp);
    }
    if req.method != method {
        let e = ApiError::new(
            405,
            format!("{} takes {method}, not {}", req.path, req.method),
        );
        return err(w, e, Some(("Allow", format!("{method}, OPTIONS"))));
    }
    let result = match req.path.as_str() {
        "/health" => Ok(json!({"status": "ok"})),
        "/v1/models" | "/models" => Ok(models(sh)),
        "/tokenize" => tokenize(&req.body, sh),
        "/detokenize" => detokenize(&req.body, sh),
        "/v1/completions" | "/completions" => {
            return match api::completion_request(&req.body, &sh.defaults) {
                Ok(g) => generate(req, w, sh, g, Kind::Text, &what),
                Err(e) => err(w, e, None),
            }
        }
        "/v1/chat/completions" | "/chat/completions" => {
            return match api::chat_request(&req.body, &sh.defaults) {
                Ok(g) => generate(req, w, sh, g, Kind::Chat, &what),
                Err(e) => err(w, e, None),
            }
        }
        // `route` knows no other path.
        other => Err(ApiError::new(404, format!("no such endpoint: {other}"))),
    };
    match result {
        Ok(v) => reply(w, Response::json(200, &v)),
        Err(e) => err(w, e, None),
    }
}

fn models(sh: &Shared) -> Value {
    json!({
        "object": "list",
        "data": [{
            "id": sh.model_name,
            "object": "model",
            "created": sh.started,
            "owned_by": "kiln",
            "meta": {"n_ctx": sh.n_ctx, "n_vocab": sh.n_vocab},
        }],
    })
}

fn engine_gone() -> ApiError {
    ApiError::new(500, "the model thread stopped while answering")
}

/// Run `f` on the engine thread and wait for its answer.
fn on_engine(
    sh: &Shared,
    f: impl FnOnce(&mut Engine) -> Result<Value, ApiError> + Send + 'static,
) -> Result<Value, ApiError> {
    let (tx, rx) = mpsc::channel();
    let job: Job = Box::new(move |e| {
        let _ = tx.send(f(e));
    });
    sh.jobs.send(job).map_err(|_| engine_gone())?;
    rx.recv().unwrap_or_else(|_| Err(engine_gone()))
}

fn tokenize(body: &[u8], sh: &Shared) -> Result<Value, ApiError> {
    let o = api::object(body)?;
    let content = api::req_str(&o, "content")?;
    let add_special = api::opt_bool(&o, "add_special")?.unwrap_or(false);
    let parse_special = api::opt_bool(&o, "parse_special")?.unwrap_or(true);
    let with_pieces = api::opt_bool(&o, "with_pieces")?.unwrap_or(false);
    on_engine(sh, move |e| {
        e.tokenize(&content, add_special, parse_special, with_pieces)
    })
}

fn detokenize(body: &[u8], sh: &Shared) -> Result<Value, ApiError> {
    let o = api::object(body)?;
    let ids = match o.get("tokens") {
        Some(v) => api::token_ids("tokens", v)?,
        None => return Err(ApiError::bad("missing `tokens`")),
    };
    on_engine(sh, move |e| e.detokenize(&ids))
}

/// A completion: queue it on the engine, then answer as one JSON object or
/// as an event stream. A prompt the engine refuses is still a plain 4xx
/// (the stream's head is written only once text or the end arrives).
fn generate(
    req: &Request,
    w: &mut TcpStream,
    sh: &Shared,
    g: GenRequest,
    kind: Kind,
    what: &str,
) -> bool {
    let n = sh.next_id.fetch_add(1, Ordering::Relaxed);
    let meta = Meta {
        kind,
        id: format!(
            "{}-{:x}{n:04x}",
            if kind == Kind::Chat {
                "chatcmpl"
            } else {
                "cmpl"
            },
            sh.started
        ),
        created: unix_now(),
        model: sh.model_name.clone(),
    };
    let stream = g.stream;
    let (tx, rx) = mpsc::channel::<Event>();
    let job: Job = Box::new(move |e| e.generate(g, &tx));
    let first = match sh.jobs.send(job) {
        Ok(()) => rx.recv().unwrap_or(Event::Error(engine_gone())),
        Err(_) => Event::Error(engine_gone()),
    };
    let fail = |w: &mut TcpStream, e: ApiError| {
        eprintln!("kiln serve: {what} -> {}: {}", e.status, e.message);
        http::write_response(w, &Response::json(e.status, &e.to_json()), req.keep_alive).is_ok()
    };
    let log = |u: &Usage, finish: &str| {
        eprintln!(
            "kiln serve: {what} -> 200: prompt {} tokens ({} cached) in {:.0} ms, {} generated in {:.0} ms ({:.1} t/s), finish {finish}",
            u.prompt_tokens,
            u.cached_tokens,
            u.prompt_ms,
            u.completion_tokens,
            u.gen_ms,
            u.completion_tokens as f64 * 1e3 / u.gen_ms.max(1e-6),
        )
    };
    if let Event::Error(e) = first {
        return fail(w, e);
    }
    if !stream {
        let mut text = String::new();
        let mut ev = first;
        loop {
            match ev {
                Event::Text(t) => text.push_str(&t),
                Event::Done { finish, usage } => {
                    log(&usage, finish);
                    let v = meta.response(&text, finish, &usage);
                    return http::write_response(w, &Response::json(200, &v), req.keep_alive)
                        .is_ok();
                }
                Event::Error(e) => return fail(w, e),
            }
            ev = rx.recv().unwrap_or(Event::Error(engine_gone()));
        }
    }
    let Ok(mut out) = EventStream::start(w, req.http10, req.keep_alive) else {
        return false;
    };
    let mut sent = match meta.opening_chunk() {
        Some(c) => out.send(&c.to_string()),
        None => Ok(()),
    };
    let mut ev = first;
    while sent.is_ok() {
        match ev {
            Event::Text(t) => sent = out.send(&meta.text_chunk(&t).to_string()),
            Event::Done { finish, usage } => {
                log(&usage, finish);
                let done = out
                    .send(&meta.final_chunk(finish, &usage).to_string())
                    .and_then(|_| out.send("[DONE]"))
                    .and_then(|_| out.finish());
                return done.is_ok() && !req.http10;
            }
            Event::Error(e) => {
                eprintln!(
                    "kiln serve: {what} -> {} mid-stream: {}",
                    e.status, e.message
                );
                let _ = out.send(&e.to_json().to_string());
                return out.finish().is_ok() && !req.http10;
            }
        }
        ev = rx.recv().unwrap_or(Event::Error(engine_gone()));
    }
    // Dropping `rx` tells the engine to stop.
    eprintln!("kiln serve: {what}: the client went away mid-stream");
    false
}
