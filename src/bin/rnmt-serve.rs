//! rnmt-serve: a translation server with OpenNMT-py's HTTP API and a web page.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use rnmt::config::DecodeConfig;
use rnmt::device::DeviceArgs;
use rnmt::serve::api::{Limits, SearchOptions};
use rnmt::serve::conn::{serve, ConnLimits};
use rnmt::serve::worker::{Worker, WorkerConfig};
use rnmt::serve::{router, App};

/// Serve translations over HTTP: POST /translator/translate (OpenNMT-py's request and
/// response shapes), GET /translator/models, GET /health, and a web page at /.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Args {
    /// Model directory written by rnmt-train (repeatable: ids 100, 101, ... in order).
    #[arg(long, short, required = true)]
    model: Vec<PathBuf>,
    /// Address to listen on (loopback by default: put a reverse proxy in front to expose it).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port (0: any free port; the address is printed on stderr).
    #[arg(long, default_value_t = 5000)]
    port: u16,
    #[command(flatten)]
    decode: DecodeConfig,
    /// Most sentences translated together (dynamic batching across requests).
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Requests waiting per model at most; more are answered 503.
    #[arg(long, default_value_t = 64)]
    queue: usize,
    /// Bytes of a request body at most (413 beyond).
    #[arg(long, default_value_t = Limits::default().max_body_bytes)]
    max_body_bytes: usize,
    /// Sentences per request at most (413 beyond).
    #[arg(long, default_value_t = Limits::default().max_sentences)]
    max_sentences: usize,
    /// Bytes of one source sentence at most (413 beyond).
    #[arg(long, default_value_t = Limits::default().max_input_bytes)]
    max_input_bytes: usize,
    /// Largest beam_size a request may ask for.
    #[arg(long, default_value_t = Limits::default().max_beam)]
    max_beam: usize,
    /// Work of one request at most: the sum of its sentences' bytes times its beam size
    /// (413 beyond), so that one request cannot hold the model for long.
    #[arg(long, default_value_t = Limits::default().max_work)]
    max_request_work: usize,
    /// Connections open at once at most; more are closed at once.
    #[arg(long, default_value_t = ConnLimits::default().max_connections)]
    max_connections: usize,
    /// Time a connection has to send a complete request head, from its start or its previous
    /// response (idle and slow connections are closed after it), e.g. 10s.
    #[arg(long, default_value = "10s", value_parser = duration)]
    header_timeout: Duration,
    /// Connections of one client address at most (more get only /health answered; behind
    /// a reverse proxy, where every connection comes from the proxy, raise it to
    /// --max-connections).
    #[arg(long, default_value_t = ConnLimits::default().max_client_connections)]
    max_client_connections: usize,
    /// Time a response may wait for a client that takes no bytes, e.g. 10s; the connection
    /// is closed after it.
    #[arg(long, default_value = "10s", value_parser = duration)]
    write_timeout: Duration,
    /// Time to receive a whole request body after its head (408 beyond), e.g. 30s.
    #[arg(long, default_value = "30s", value_parser = duration)]
    body_timeout: Duration,
    #[command(flatten)]
    dev: DeviceArgs,
}

/// A positive duration such as `10s`, `2m` or `0.5s`.
fn duration(s: &str) -> std::result::Result<Duration, String> {
    match rnmt::config::parse_duration(s) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err("must be positive".into()),
        Err(e) => Err(e.to_string()),
    }
}

fn run(mut a: Args) -> Result<()> {
    let device = a.dev.apply(rnmt::precision::Precision::Auto)?;
    a.decode.validate()?;
    {
        use rnmt::sizing::{check, MAX_BATCH_SIZE, MAX_CONNECTIONS, MAX_QUEUE};
        check("--queue", a.queue, MAX_QUEUE, "requests waiting per model")?;
        check(
            "--max-connections",
            a.max_connections,
            MAX_CONNECTIONS,
            "connections open at once",
        )?;
        check(
            "--max-client-connections",
            a.max_client_connections,
            MAX_CONNECTIONS,
            "connections of one client",
        )?;
        check(
            "--batch-size",
            a.batch_size,
            MAX_BATCH_SIZE,
            "sentences translated together",
        )?;
        if a.decode.beam > a.max_beam {
            anyhow::bail!(
                "--beam {} is more than --max-beam {}: every request without its own beam_size would be refused; lower --beam or raise --max-beam",
                a.decode.beam,
                a.max_beam
            );
        }
    }
    let addr: SocketAddr = format!("{}:{}", a.host, a.port)
        .parse()
        .with_context(|| format!("--host {} --port {}: not an address", a.host, a.port))?;
    let mut workers = Vec::new();
    for (i, dir) in a.model.iter().enumerate() {
        let config = WorkerConfig {
            id: 100 + i as u64,
            dir: dir.clone(),
            device,
            precision: a.dev.precision,
            decode: a.decode.clone(),
            batch_size: a.batch_size,
            queue: a.queue,
        };
        workers.push(Worker::start(config).with_context(|| format!("loading {}", dir.display()))?);
    }
    let app = Arc::new(App {
        workers,
        limits: Limits {
            max_body_bytes: a.max_body_bytes,
            max_sentences: a.max_sentences,
            max_input_bytes: a.max_input_bytes,
            max_beam: a.max_beam,
            max_work: a.max_request_work,
        },
        body_timeout: a.body_timeout,
        defaults: SearchOptions {
            beam: a.decode.beam,
            n_best: 1,
            attention: false,
            align: false,
        },
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("listening on {addr}"))?;
        let local = listener.local_addr().context("reading the bound address")?;
        for w in &app.workers {
            eprintln!(
                "rnmt-serve: model {} = {} on {} ({})",
                w.info.model_id, w.info.dir, w.info.device, w.info.precision
            );
        }
        eprintln!("rnmt-serve: listening on http://{local}");
        let limits = ConnLimits {
            max_connections: a.max_connections,
            header_timeout: a.header_timeout,
            max_client_connections: a.max_client_connections,
            write_timeout: a.write_timeout,
        };
        serve(listener, router(app.clone()), limits, shutdown_signal()).await;
        eprintln!("rnmt-serve: stopped");
        anyhow::Ok(())
    })?;
    // The last handle: the workers finish their queues and their threads end.
    drop(app);
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM: the server stops accepting, finishes the requests in
/// flight, and exits 0.
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    rnmt::cli::run("rnmt-serve", || run(args))
}
