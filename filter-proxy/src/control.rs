//! The proxy's local control socket (`status`, `reload`, `health`, per
//! `igw_core::control`), the metrics endpoint, signals, and the daemon's main loop.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use igw_core::control::{Request, Response};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, UnixListener};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use crate::server::{Listeners, ProxyConfig, ProxyError, Shared, serve};

/// Answers one control request.
pub fn answer(shared: &Shared, req: &Request) -> Response {
    match req.cmd.as_str() {
        "status" => Response::ok(shared.status()),
        "health" => Response::ok(serde_json::json!({"healthy": true})),
        "reload" => match shared.reload() {
            Ok(n) => Response::ok(serde_json::json!({"rules": n})),
            Err(e) => Response::err(e.to_string()),
        },
        other => Response::err(format!(
            "unknown command `{other}` (status, reload, health)"
        )),
    }
}

async fn control_loop(shared: Arc<Shared>, l: UnixListener) {
    loop {
        let Ok((s, _)) = l.accept().await else {
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let (r, mut w) = s.into_split();
            let mut line = String::new();
            let mut r = BufReader::new(r);
            if r.read_line(&mut line).await.is_err() {
                return;
            }
            let resp = match serde_json::from_str::<Request>(&line) {
                // Reload compiles the policy (100k rules take a while): off the runtime.
                Ok(req) => {
                    let sh = shared.clone();
                    tokio::task::spawn_blocking(move || answer(&sh, &req))
                        .await
                        .unwrap_or_else(|_| Response::err("internal error"))
                }
                Err(e) => Response::err(format!("bad request: {e}")),
            };
            if let Ok(mut out) = serde_json::to_vec(&resp) {
                out.push(b'\n');
                let _ = w.write_all(&out).await;
            }
        });
    }
}

async fn metrics_loop(shared: Arc<Shared>, l: TcpListener) {
    loop {
        let Ok((s, _)) = l.accept().await else {
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |_req| {
                let body = shared.metrics_text();
                async move {
                    let mut r = hyper::Response::new(Full::new(Bytes::from(body)));
                    r.headers_mut().insert(
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static(
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        ),
                    );
                    Ok::<_, std::convert::Infallible>(r)
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(s), svc)
                .await;
        });
    }
}

fn bind_control(path: &Path) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // A stale socket from a previous run: remove it only if nobody answers on it.
    if path.exists() && std::os::unix::net::UnixStream::connect(path).is_err() {
        std::fs::remove_file(path)?;
    }
    UnixListener::bind(path)
}

/// Runs the daemon until SIGTERM or SIGINT, then drains. SIGHUP reloads the policy.
pub async fn run(cfg: ProxyConfig, shared: Arc<Shared>) -> Result<(), ProxyError> {
    let listeners = Listeners::bind(&cfg).await?;
    if let Some(a) = cfg.metrics {
        let l = TcpListener::bind(a)
            .await
            .map_err(|source| ProxyError::Listen {
                addr: a.to_string(),
                source,
            })?;
        tokio::spawn(metrics_loop(shared.clone(), l));
    }
    if let Some(p) = &cfg.control_socket {
        let l = bind_control(p).map_err(|source| ProxyError::Listen {
            addr: p.display().to_string(),
            source,
        })?;
        tokio::spawn(control_loop(shared.clone(), l));
    }
    let listen = |l: &Option<tokio::net::TcpListener>| {
        l.as_ref()
            .and_then(|l| l.local_addr().ok())
            .map(|a| a.to_string())
            .unwrap_or_else(|| "-".into())
    };
    tracing::info!(
        explicit = %listen(&listeners.explicit),
        transparent_http = %listen(&listeners.transparent_http),
        transparent_tls = %listen(&listeners.transparent_tls),
        rules = shared.matcher().rule_count(),
        "proxy ready"
    );
    let (tx, rx) = watch::channel(false);
    let server = tokio::spawn(serve(shared.clone(), listeners, rx));
    let mut hup = signal(SignalKind::hangup()).map_err(|source| ProxyError::Listen {
        addr: "SIGHUP".into(),
        source,
    })?;
    let mut term = signal(SignalKind::terminate()).map_err(|source| ProxyError::Listen {
        addr: "SIGTERM".into(),
        source,
    })?;
    let mut int = signal(SignalKind::interrupt()).map_err(|source| ProxyError::Listen {
        addr: "SIGINT".into(),
        source,
    })?;
    loop {
        tokio::select! {
            _ = hup.recv() => {
                let sh = shared.clone();
                let _ = tokio::task::spawn_blocking(move || sh.reload()).await;
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    tracing::info!(
        connections = shared.connections(),
        "shutting down: draining"
    );
    let _ = tx.send(true);
    let _ = server.await;
    if let Some(p) = &cfg.control_socket {
        let _ = std::fs::remove_file(p);
    }
    Ok(())
}
