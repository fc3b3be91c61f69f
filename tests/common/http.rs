//! Loopback HTTP plumbing shared by the integration tests: a test CA and
//! server certificate ([`Pki`]), a minimal HTTP/1.1 request reader and
//! response writer, a generic loopback server ([`LoopbackServer`]) whose
//! handler may stay silent to test timeouts, and [`ModelsServer`], a
//! stand-in for the OpenAI models API. Every listener binds 127.0.0.1.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::rustls;

/// A CA made for one test and a server certificate it signed for
/// 127.0.0.1 and localhost.
pub struct Pki {
    pub ca_pem: String,
    /// A client certificate and its key, signed by the CA, for mutual TLS.
    pub client_cert_pem: String,
    pub client_key_pem: String,
    ca_der: rustls::pki_types::CertificateDer<'static>,
    server_chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    server_key: rustls::pki_types::PrivateKeyDer<'static>,
}

impl Pki {
    pub fn generate() -> Pki {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
        };

        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "keyrun test CA");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);

        let server_key = KeyPair::generate().unwrap();
        let mut server_params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        server_params
            .distinguished_name
            .push(DnType::CommonName, "127.0.0.1");
        let server_cert = server_params.signed_by(&server_key, &issuer).unwrap();

        let client_key = KeyPair::generate().unwrap();
        let mut client_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        client_params
            .distinguished_name
            .push(DnType::CommonName, "keyrun test client");
        client_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let client_cert = client_params.signed_by(&client_key, &issuer).unwrap();

        Pki {
            ca_pem: ca_cert.pem(),
            client_cert_pem: client_cert.pem(),
            client_key_pem: client_key.serialize_pem(),
            ca_der: ca_cert.der().clone(),
            server_chain: vec![server_cert.der().clone()],
            server_key: rustls::pki_types::PrivateKeyDer::Pkcs8(server_key.serialize_der().into()),
        }
    }

    /// Writes the CA certificate as a PEM file for `SSL_CERT_FILE`.
    pub fn write_ca(&self, dir: &Path) -> PathBuf {
        let path = dir.join("test-ca.pem");
        std::fs::write(&path, &self.ca_pem).unwrap();
        path
    }

    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(self.server_chain.clone(), self.server_key.clone_key())
            .unwrap();
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    }

    /// An acceptor that also requires a client certificate signed by the
    /// CA.
    pub fn mutual_acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der.clone()).unwrap();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .unwrap();
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.server_chain.clone(), self.server_key.clone_key())
            .unwrap();
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    }
}

/// A request as read off the wire.
pub struct RawRequest {
    pub method: String,
    pub target: String,
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

/// A response to write.
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn json(status: u16, body: serde_json::Value) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: body.to_string(),
        }
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Response {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }
}

pub async fn read_request<S: AsyncRead + Unpin>(stream: &mut S) -> Option<RawRequest> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = find(&buffer, b"\r\n\r\n") {
            break at;
        }
        let read = stream.read(&mut chunk).await.ok()?;
        if read == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..read]);
    };

    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let method = request_line.next()?.to_string();
    let target = request_line.next()?.to_string();
    let mut headers = BTreeMap::new();
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
        }
    }

    let length: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = buffer[head_end + 4..].to_vec();
    while body.len() < length {
        let read = stream.read(&mut chunk).await.ok()?;
        if read == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..read]);
    }
    Some(RawRequest {
        method,
        target,
        headers,
        body,
    })
}

pub async fn write_response<S: AsyncWrite + Unpin>(stream: &mut S, response: Response) {
    let reason = match response.status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    };
    let mut head = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n",
        response.status,
        response.body.len()
    );
    for (name, value) in &response.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(response.body.as_bytes()).await;
    let _ = stream.flush().await;
    let _ = stream.shutdown().await;
}

impl RawRequest {
    /// Returns the path without its query string.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or(&self.target)
    }

    /// Decodes the query parameters.
    pub fn query(&self) -> BTreeMap<String, String> {
        match self.target.split_once('?') {
            Some((_, query)) => parse_form(query),
            None => BTreeMap::new(),
        }
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A request handler: `None` reads the request and never responds, which
/// tests a client's timeout.
pub type Handler = dyn Fn(&RawRequest) -> Option<Response> + Send + Sync + 'static;

/// A loopback HTTP server (TLS when given a [`Pki`]) that responds to each
/// request through a handler and logs every request it read.
pub struct LoopbackServer {
    pub port: u16,
    log: Arc<Mutex<Vec<RawRequest>>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LoopbackServer {
    pub fn start(
        pki: Option<&Pki>,
        handler: impl Fn(&RawRequest) -> Option<Response> + Send + Sync + 'static,
    ) -> LoopbackServer {
        LoopbackServer::start_with_acceptor(pki.map(Pki::acceptor), handler)
    }

    /// Starts a server whose TLS setup the caller chose (`None`: plain
    /// HTTP), such as [`Pki::mutual_acceptor`].
    pub fn start_with_acceptor(
        acceptor: Option<tokio_rustls::TlsAcceptor>,
        handler: impl Fn(&RawRequest) -> Option<Response> + Send + Sync + 'static,
    ) -> LoopbackServer {
        let handler: Arc<Handler> = Arc::new(handler);
        let log = Arc::new(Mutex::new(Vec::new()));
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let (shutdown_tx, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
        let thread_log = log.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
                port_tx.send(listener.local_addr().unwrap().port()).unwrap();
                let accept_loop = async move {
                    loop {
                        let Ok((stream, _)) = listener.accept().await else {
                            continue;
                        };
                        // As Vault does (Go sets TCP_NODELAY on every
                        // connection): with Nagle's algorithm on, the body
                        // written after the head waits for the client's
                        // delayed ACK, about 40 ms on Linux.
                        let _ = stream.set_nodelay(true);
                        let handler = handler.clone();
                        let log = thread_log.clone();
                        let acceptor = acceptor.clone();
                        tokio::task::spawn_local(async move {
                            match acceptor {
                                Some(acceptor) => {
                                    if let Ok(stream) = acceptor.accept(stream).await {
                                        serve(stream, handler, log).await;
                                    }
                                }
                                None => serve(stream, handler, log).await,
                            }
                        });
                    }
                };
                let local = tokio::task::LocalSet::new();
                local
                    .run_until(async move {
                        tokio::select! {
                            _ = accept_loop => {}
                            _ = shutdown_rx => {}
                        }
                    })
                    .await;
            });
        });
        let port = port_rx.recv().unwrap();
        LoopbackServer {
            port,
            log,
            shutdown: Some(shutdown_tx),
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT` or `https://127.0.0.1:PORT`.
    pub fn url(&self, tls: bool) -> String {
        let scheme = if tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// Runs `read` on the requests received so far.
    pub fn with_log<T>(&self, read: impl FnOnce(&[RawRequest]) -> T) -> T {
        read(&self.log.lock().unwrap())
    }

    /// Counts the requests whose path starts with `prefix`.
    pub fn count(&self, prefix: &str) -> usize {
        self.with_log(|log| log.iter().filter(|r| r.path().starts_with(prefix)).count())
    }
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    handler: Arc<Handler>,
    log: Arc<Mutex<Vec<RawRequest>>>,
) {
    // Keep-alive: respond to requests on this connection until it closes.
    while let Some(request) = read_request(&mut stream).await {
        let response = handler(&request);
        log.lock().unwrap().push(request);
        match response {
            Some(response) => {
                if !write_keep_alive(&mut stream, response).await {
                    return;
                }
            }
            None => {
                // Stay silent until the client gives up.
                let mut sink = [0u8; 1024];
                while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
                return;
            }
        }
    }
}

/// Writes a response that keeps the connection open; false when the
/// client went away.
async fn write_keep_alive<S: AsyncWrite + Unpin>(stream: &mut S, response: Response) -> bool {
    let mut head = format!(
        "HTTP/1.1 {} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        response.status,
        response.body.len()
    );
    for (name, value) in &response.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.is_ok()
        && stream.write_all(response.body.as_bytes()).await.is_ok()
        && stream.flush().await.is_ok()
}

impl Drop for LoopbackServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Parses `application/x-www-form-urlencoded` text.
pub fn parse_form(text: &str) -> BTreeMap<String, String> {
    text.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(name), decode(value))
        })
        .collect()
}

fn decode(text: &str) -> String {
    let spaced = text.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8_lossy()
        .into_owned()
}

/// Random lowercase hex, for tokens, versions and ids.
pub fn random_hex(bytes: usize) -> String {
    use std::io::Read;
    let mut buffer = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut buffer)
        .unwrap();
    buffer.iter().map(|b| format!("{b:02x}")).collect()
}

/// A loopback stand-in for the OpenAI API's `GET /v1/models`: it lists
/// models only for `Authorization: Bearer <key>` and answers 401 with the
/// API's `invalid_api_key` error otherwise.
pub struct ModelsServer {
    pub port: u16,
    authorized: Arc<Mutex<usize>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ModelsServer {
    pub fn start(key: &str) -> ModelsServer {
        let expected = format!("Bearer {key}");
        let authorized = Arc::new(Mutex::new(0usize));
        let counter = authorized.clone();
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let (shutdown_tx, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
                port_tx.send(listener.local_addr().unwrap().port()).unwrap();
                let serve = async move {
                    loop {
                        let Ok((mut stream, _)) = listener.accept().await else {
                            continue;
                        };
                        let Some(request) = read_request(&mut stream).await else {
                            continue;
                        };
                        let path = request.target.split('?').next().unwrap_or("");
                        let response = if request.method != "GET" || path != "/v1/models" {
                            Response::json(
                                404,
                                serde_json::json!({"error": {"message": "Unknown request URL", "type": "invalid_request_error", "param": null, "code": "unknown_url"}}),
                            )
                        } else if request.headers.get("authorization") == Some(&expected) {
                            *counter.lock().unwrap() += 1;
                            Response::json(
                                200,
                                serde_json::json!({
                                    "object": "list",
                                    "data": [
                                        {"id": "gpt-4o-mini", "object": "model", "created": 1721172741, "owned_by": "system"},
                                        {"id": "text-embedding-3-small", "object": "model", "created": 1705948997, "owned_by": "system"},
                                    ],
                                }),
                            )
                        } else {
                            Response::json(
                                401,
                                serde_json::json!({"error": {"message": "Incorrect API key provided.", "type": "invalid_request_error", "param": null, "code": "invalid_api_key"}}),
                            )
                        };
                        write_response(&mut stream, response).await;
                    }
                };
                tokio::select! {
                    _ = serve => {}
                    _ = shutdown_rx => {}
                }
            });
        });
        let port = port_rx.recv().unwrap();
        ModelsServer {
            port,
            authorized,
            shutdown: Some(shutdown_tx),
            thread: Some(thread),
        }
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }

    /// How many requests carried the expected key.
    pub fn authorized_requests(&self) -> usize {
        *self.authorized.lock().unwrap()
    }
}

impl Drop for ModelsServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
