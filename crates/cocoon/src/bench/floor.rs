//! `cocoon bench --floor`: what the transport alone costs. Three relays stand in for the client,
//! proxy and worker, as separate processes on the same stack and settings as the nodes — the
//! client's HTTP surface (`serve_http`), HTTP/2 links (`cocoon_node::link`, the same windows,
//! buffering and deferred flush) over TLS 1.3 (rustls), a worker that dials its proxy and serves
//! it, the worker's pooled engine client, answers' chunks gathered into frames as the nodes gather
//! them (the worker's batches, the proxy's merged frames) — but each only passes a request on and
//! its answer back: no attestation beyond the TLS handshake, no payments, metering, receipts,
//! routing or queue.
//!
//! The network's cost above this floor is what the nodes' own work adds; the floor's cost above
//! the direct baseline is the transport's, which no change to that work can remove.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::Router;
use bytes::Bytes;
use clap::{Args, Subcommand};
use cocoon_node::backoff::Backoff;
use cocoon_node::link::{self, LinkSender};
use cocoon_node::serve::{serve_http, HttpLimits};
use cocoon_node::Body;
use cocoon_proxy::coalesced_body::Coalesced;
use cocoon_worker::engine::Engine;
use cocoon_worker::ready_batch::next_batch;
use http::{header, HeaderValue, Method, StatusCode};
use http_body_util::BodyExt;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::net::TcpStream;
use tokio::sync::OnceCell;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_util::sync::CancellationToken;

/// Options of `cocoon bench relay` (started by `cocoon bench --floor`).
#[derive(Debug, Args)]
pub struct RelayArgs {
    /// Which node the relay stands in for.
    #[command(subcommand)]
    pub role: RelayRole,
    /// Directory holding the relays' shared self-signed certificate (`cert.der`) and its key
    /// (`key.der`, PKCS#8); every relay trusts exactly that certificate.
    #[arg(long, global = true, value_name = "DIR")]
    pub tls_dir: Option<PathBuf>,
}

/// The node a relay stands in for.
#[derive(Debug, Subcommand)]
pub enum RelayRole {
    /// Serves the app over HTTP and passes each request to the proxy relay over one link.
    Client {
        /// The app's address.
        #[arg(long)]
        listen: SocketAddr,
        /// The proxy relay's address for clients.
        #[arg(long)]
        proxy: SocketAddr,
    },
    /// Passes each client request to the worker relay that dialed it.
    Proxy {
        /// Where client relays dial.
        #[arg(long)]
        client_listen: SocketAddr,
        /// Where the worker relay dials.
        #[arg(long)]
        worker_listen: SocketAddr,
    },
    /// Dials the proxy relay, serves it, and passes each request to the engine.
    Worker {
        /// The proxy relay's address for workers.
        #[arg(long)]
        proxy: SocketAddr,
        /// The engine's base URL.
        #[arg(long)]
        engine: String,
    },
}

/// The name the relays' certificate is issued to and checked against.
const SERVER_NAME: &str = "localhost";
/// How long a relay waits for its peer to come up.
const DIAL_FOR: Duration = Duration::from_secs(10);

/// Writes a fresh self-signed certificate and key (readable by its owner only) for the relays
/// into `dir`.
pub(super) fn write_tls_material(dir: &Path) -> anyhow::Result<()> {
    let issued = rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_owned()])
        .context("issuing the relays' certificate")?;
    std::fs::create_dir_all(dir).context("creating the relays' directory")?;
    std::fs::write(dir.join("cert.der"), issued.cert.der()).context("writing cert.der")?;
    cocoon_node::key_file::write_secret(&dir.join("key.der"), &issued.signing_key.serialize_der())
}

/// The relays' TLS: a server that presents the shared certificate and a client that trusts only
/// it, both speaking HTTP/2 (ALPN `h2`) with ring as the provider, as the nodes do.
struct Tls {
    acceptor: TlsAcceptor,
    connector: TlsConnector,
}

impl Tls {
    fn load(dir: &Path) -> anyhow::Result<Tls> {
        let cert = CertificateDer::from(std::fs::read(dir.join("cert.der")).context("cert.der")?);
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            std::fs::read(dir.join("key.der")).context("key.der")?,
        ));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)?;
        server.alpn_protocols = vec![b"h2".to_vec()];
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert)?;
        let mut client = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(roots)
            .with_no_client_auth();
        client.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Tls {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            connector: TlsConnector::from(Arc::new(client)),
        })
    }

    /// Dials `address` (retrying while it is not up yet) and completes the TLS handshake.
    async fn dial(
        &self,
        address: SocketAddr,
    ) -> anyhow::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let tcp = tokio::time::timeout(DIAL_FOR, async {
            let mut backoff = Backoff::new(Duration::from_millis(10), Duration::from_millis(200));
            loop {
                match TcpStream::connect(address).await {
                    Ok(tcp) => return tcp,
                    Err(_) => tokio::time::sleep(backoff.next_delay()).await,
                }
            }
        })
        .await
        .with_context(|| format!("{address} did not come up"))?;
        tcp.set_nodelay(true)?;
        let name = ServerName::try_from(SERVER_NAME)?;
        Ok(self.connector.connect(name, tcp).await?)
    }

    /// Accepts connections on `address` and hands each, once its TLS handshake is done, to
    /// `serve` on a task of its own.
    async fn accept<F, Fut>(&self, address: SocketAddr, serve: F) -> anyhow::Result<()>
    where
        F: Fn(tokio_rustls::server::TlsStream<TcpStream>) -> Fut + Clone + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let listener = cocoon_node::serve::listen(address).await?;
        loop {
            let (tcp, _) = listener.accept().await?;
            tcp.set_nodelay(true)?;
            let (acceptor, serve) = (self.acceptor.clone(), serve.clone());
            tokio::spawn(async move {
                match acceptor.accept(tcp).await {
                    Ok(tls) => serve(tls).await,
                    Err(error) => tracing::warn!(%error, "relay: TLS handshake failed"),
                }
            });
        }
    }
}

/// Runs one relay until it fails or the process is stopped.
pub async fn relay(args: RelayArgs) -> anyhow::Result<()> {
    let dir = args.tls_dir.context("--tls-dir is required")?;
    let tls = Tls::load(&dir)?;
    match args.role {
        RelayRole::Client { listen, proxy } => {
            let link = Arc::new(OnceCell::new_with(Some(dial_link(&tls, proxy).await?)));
            let router = Router::new().fallback(pass_on).with_state(link);
            let listener = cocoon_node::serve::listen(listen).await?;
            serve_http(
                listener,
                router,
                HttpLimits::default(),
                "floor",
                std::future::pending(),
            )
            .await;
            Ok(())
        }
        RelayRole::Proxy {
            client_listen,
            worker_listen,
        } => {
            let worker: Arc<OnceCell<LinkSender>> = Arc::new(OnceCell::new());
            let router = Router::new().fallback(pass_on).with_state(worker.clone());
            let workers = tls.accept(worker_listen, move |tls| {
                let worker = worker.clone();
                async move {
                    match link::client_handshake(tls).await {
                        Ok((sender, driver)) => {
                            let _ = worker.set(sender);
                            driver.await;
                        }
                        Err(error) => tracing::warn!(%error, "relay: worker link failed"),
                    }
                }
            });
            let clients = tls.accept(client_listen, move |tls| {
                let router = router.clone();
                async move { serve_link(tls, router).await }
            });
            tokio::try_join!(workers, clients).map(|_| ())
        }
        RelayRole::Worker { proxy, engine } => {
            let engine = Arc::new(Engine::http(&engine)?);
            let router = Router::new().fallback(to_engine).with_state(engine);
            // The benchmark stops the proxy relay first: then this one's work is done.
            serve_link(tls.dial(proxy).await?, router).await;
            Ok(())
        }
    }
}

/// Opens an HTTP/2 link to `address` and keeps it driven.
async fn dial_link(tls: &Tls, address: SocketAddr) -> anyhow::Result<LinkSender> {
    let (sender, driver) = link::client_handshake(tls.dial(address).await?).await?;
    tokio::spawn(driver);
    Ok(sender)
}

/// Serves `router` as HTTP/2 on a link until it ends.
async fn serve_link<S>(io: S, router: Router)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let never = CancellationToken::new();
    if let Err(error) = link::serve(io, router, &never, Duration::ZERO).await {
        tracing::debug!(%error, "relay: link ended");
    }
}

/// The largest request body a relay reads (the benchmark's are ~100 bytes).
const MAX_BODY: usize = 1 << 20;

/// The body of a request, read whole (as every node reads it) up to [`MAX_BODY`], or the reason
/// it could not be.
async fn read_body(request: Request) -> Result<(String, Bytes), Response> {
    let (parts, body) = request.into_parts();
    let body = http_body_util::Limited::new(body, MAX_BODY)
        .collect()
        .await
        .map_err(|error| (StatusCode::BAD_REQUEST, error.to_string()).into_response())?;
    Ok((parts.uri.path().to_owned(), body.to_bytes()))
}

/// Passes a request on over the link in `link`, and its answer back as it streams.
async fn pass_on(State(link): State<Arc<OnceCell<LinkSender>>>, request: Request) -> Response {
    let (path, body) = match read_body(request).await {
        Ok(read) => read,
        Err(response) => return response,
    };
    let Some(sender) = link.get() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "no link yet").into_response();
    };
    let request = http::Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body));
    let request = match request {
        Ok(request) => request,
        Err(error) => return (StatusCode::BAD_REQUEST, error.to_string()).into_response(),
    };
    match sender.clone().send_request(request).await {
        Ok(response) => response.map(|answer| Body::new(Coalesced::new(answer))),
        Err(error) => (StatusCode::BAD_GATEWAY, error.to_string()).into_response(),
    }
}

/// The engine's answer with the chunks it has already sent gathered into one frame, as the worker
/// gathers them.
fn in_batches(body: Body) -> Body {
    let chunks = body.into_data_stream();
    Body::from_stream(futures::stream::unfold(chunks, |mut chunks| async move {
        let batch = next_batch(&mut chunks).await?;
        let joined = match batch.into_iter().collect::<Result<Vec<Bytes>, _>>() {
            Ok(mut parts) if parts.len() == 1 => Ok(parts.remove(0)),
            Ok(parts) => Ok(Bytes::from(parts.concat())),
            Err(error) => Err(error),
        };
        Some((joined, chunks))
    }))
}

/// Passes a request to the engine, and its answer back as it streams (without the engine's
/// HTTP/1-only headers).
async fn to_engine(State(engine): State<Arc<Engine>>, request: Request) -> Response {
    let (path, body) = match read_body(request).await {
        Ok(read) => read,
        Err(response) => return response,
    };
    match engine.post(&path, body).await {
        Ok(answer) => {
            let (parts, body) = answer.into_parts();
            let mut response = Response::new(in_batches(body));
            *response.status_mut() = parts.status;
            let content_type = parts.headers.get(header::CONTENT_TYPE).cloned();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                content_type.unwrap_or(HeaderValue::from_static("application/json")),
            );
            response
        }
        Err(error) => (StatusCode::BAD_GATEWAY, error.to_string()).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cocoon_worker::synthetic::{self, SyntheticParams};
    use http_body_util::BodyExt;

    /// A free loopback address (bound and released; the relay binds it next).
    fn free_address() -> SocketAddr {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .unwrap()
    }

    async fn chat(address: SocketAddr, body: &str) -> Bytes {
        let answer =
            super::super::load::post_chat(&address.to_string(), Bytes::from(body.to_owned()))
                .await
                .unwrap();
        answer.collect().await.unwrap().to_bytes()
    }

    /// `data:` payloads of an SSE answer, each with its `id` and `created` left out (they differ
    /// per answer).
    fn events(answer: &[u8]) -> Vec<String> {
        let text = std::str::from_utf8(answer).unwrap();
        text.lines()
            .filter_map(|line| line.strip_prefix("data: "))
            .map(
                |data| match serde_json::from_str::<serde_json::Value>(data) {
                    Ok(mut event) => {
                        event.as_object_mut().map(|event| {
                            event.remove("id");
                            event.remove("created")
                        });
                        event.to_string()
                    }
                    Err(_) => data.to_owned(),
                },
            )
            .collect()
    }

    #[tokio::test]
    async fn a_body_past_the_limit_is_refused_and_one_within_it_read_whole() {
        let request = |len: usize| {
            http::Request::post("/v1/chat/completions")
                .body(Body::from(vec![b'x'; len]))
                .unwrap()
        };
        let refused = read_body(request(MAX_BODY + 1)).await.unwrap_err();
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
        let (path, body) = read_body(request(MAX_BODY)).await.unwrap();
        assert_eq!(
            (path.as_str(), body.len()),
            ("/v1/chat/completions", MAX_BODY)
        );
    }

    #[tokio::test]
    async fn a_flushed_stream_crosses_the_three_relays_whole_and_in_order() {
        let dir = tempfile::tempdir().unwrap();
        write_tls_material(dir.path()).unwrap();
        let engine = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let engine_address = engine.local_addr().unwrap();
        let params = SyntheticParams {
            chunk_bytes: 16,
            interval: Duration::ZERO,
            flush_each_chunk: true,
        };
        let served = axum::serve(engine, synthetic::router(params));
        tokio::spawn(async move { served.await });
        let (api, for_clients, for_workers) = (free_address(), free_address(), free_address());
        let tls_dir = Some(dir.path().to_owned());
        let relays = [
            RelayRole::Proxy {
                client_listen: for_clients,
                worker_listen: for_workers,
            },
            RelayRole::Worker {
                proxy: for_workers,
                engine: format!("http://{engine_address}"),
            },
            RelayRole::Client {
                listen: api,
                proxy: for_clients,
            },
        ];
        for role in relays {
            let args = RelayArgs {
                role,
                tls_dir: tls_dir.clone(),
            };
            tokio::spawn(relay(args));
        }
        let request = r#"{"model":"synthetic","stream":true,"max_tokens":40,"messages":[{"role":"user","content":"hi"}]}"#;
        super::super::load::wait_ready(&api.to_string(), request)
            .await
            .unwrap();

        let direct = events(&chat(engine_address, request).await);
        let relayed = events(&chat(api, request).await);
        assert!(direct.len() > 40, "{direct:?}");
        assert_eq!(relayed, direct);
        assert_eq!(relayed.last().map(String::as_str), Some("[DONE]"));
    }
}
