//! The AWS side of the `aws-sm:` tests:
//!
//! - [`Moto`]: one `moto_server` (PyPI `moto[server]`, path in
//!   `KEYRUN_TEST_MOTO`) per test binary on a free loopback port, and calls
//!   to its Secrets Manager API in the JSON 1.1 protocol (`POST /` with
//!   `X-Amz-Target: secretsmanager.ACTION`) to create and change secrets;
//! - [`counting_proxy`]: a loopback server that forwards each request to
//!   moto and logs it, so a test can count `GetSecretValue` calls;
//! - [`error_response`] and [`value_response`]: Secrets Manager's JSON
//!   error and `GetSecretValue` bodies, for faults that moto cannot
//!   produce (access denied, decryption failure, throttling, 5xx).
//!
//! Everything binds or connects to 127.0.0.1 only.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub use crate::common::http::{random_hex, LoopbackServer, Response};

/// The region the tests create secrets in and give keyrun.
pub const REGION: &str = "us-east-1";

/// A running `moto_server`.
pub struct Moto {
    pub port: u16,
}

static MOTO: OnceLock<Option<Moto>> = OnceLock::new();

impl Moto {
    /// Returns the test binary's moto server, starting it on first use; `None` when
    /// `KEYRUN_TEST_MOTO` is not set (tests/run.sh sets it).
    pub fn shared() -> Option<&'static Moto> {
        MOTO.get_or_init(|| {
            let path = std::env::var_os("KEYRUN_TEST_MOTO")?;
            Some(Moto::start(path.into()))
        })
        .as_ref()
    }

    /// Starts moto_server from a thread that lives as long as the server
    /// does, with PR_SET_PDEATHSIG so the server ends with that thread, and
    /// so with the test binary.
    fn start(path: std::path::PathBuf) -> Moto {
        let port = free_port();
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut command = Command::new(&path);
            command
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            // SAFETY: prctl is async-signal-safe and touches no memory of
            // the parent.
            unsafe {
                command.pre_exec(|| {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            let mut child = command.spawn().expect("start moto_server");
            started_tx.send(()).unwrap();
            let _ = child.wait();
        });
        started_rx.recv().unwrap();

        let deadline = Instant::now() + Duration::from_secs(60);
        let moto = Moto { port };
        while Instant::now() < deadline {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return moto;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("moto_server did not listen on 127.0.0.1:{port} within 60s");
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Calls a Secrets Manager action; returns the status and the JSON
    /// body.
    pub fn call(&self, action: &str, body: Value) -> (u16, Value) {
        let headers = vec![
            (
                "X-Amz-Target".to_string(),
                format!("secretsmanager.{action}"),
            ),
            (
                "Content-Type".to_string(),
                "application/x-amz-json-1.1".to_string(),
            ),
            // moto reads the region from the credential scope and does not
            // check the signature.
            (
                "Authorization".to_string(),
                format!(
                    "AWS4-HMAC-SHA256 Credential=test/20240101/{REGION}/secretsmanager/aws4_request, SignedHeaders=host, Signature=0"
                ),
            ),
        ];
        let (status, _, body) = post(self.port, &headers, body.to_string().as_bytes());
        let parsed = serde_json::from_slice(&body).unwrap_or(Value::Null);
        (status, parsed)
    }

    fn call_ok(&self, action: &str, body: Value) -> Value {
        let (status, reply) = self.call(action, body);
        assert_eq!(status, 200, "moto {action} failed: {reply}");
        reply
    }

    /// Creates a secret with a SecretString; returns its version id.
    pub fn create_string(&self, name: &str, value: &str) -> String {
        let reply = self.call_ok("CreateSecret", json!({"Name": name, "SecretString": value}));
        reply["VersionId"].as_str().unwrap().to_string()
    }

    /// Creates a secret with a SecretBinary; returns its version id.
    pub fn create_binary(&self, name: &str, value: &[u8]) -> String {
        use base64::Engine as _;
        let encoded = base64::engine::general_purpose::STANDARD.encode(value);
        let reply = self.call_ok(
            "CreateSecret",
            json!({"Name": name, "SecretBinary": encoded}),
        );
        reply["VersionId"].as_str().unwrap().to_string()
    }

    /// Stores a new AWSCURRENT version; the old one becomes AWSPREVIOUS.
    pub fn put_string(&self, name: &str, value: &str) -> String {
        let reply = self.call_ok(
            "PutSecretValue",
            json!({"SecretId": name, "SecretString": value}),
        );
        reply["VersionId"].as_str().unwrap().to_string()
    }

    /// Schedules a secret for deletion after the shortest recovery window.
    pub fn schedule_deletion(&self, name: &str) {
        self.call_ok(
            "DeleteSecret",
            json!({"SecretId": name, "RecoveryWindowInDays": 7}),
        );
    }
}

/// Makes a unique secret name, so tests can share one moto server.
pub fn secret_name(prefix: &str) -> String {
    format!("keyrun-test/{prefix}-{}", random_hex(6))
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// Sends one HTTP/1.1 POST to 127.0.0.1:`port` and reads the whole
/// response; returns the status, the headers and the body.
pub fn post(
    port: u16,
    headers: &[(String, String)],
    body: &[u8],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut head = format!(
        "POST / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();

    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let split = crate::common::http::find(&raw, b"\r\n\r\n").expect("an HTTP response head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .expect("an HTTP status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(name, value)| name == "transfer-encoding" && value.contains("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    (status, headers, body)
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = crate::common::http::find(data, b"\r\n") {
        let size_text = String::from_utf8_lossy(&data[..end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap();
        if size == 0 {
            break;
        }
        out.extend_from_slice(&data[end + 2..end + 2 + size]);
        data = &data[end + 2 + size + 2..];
    }
    out
}

/// A loopback server that forwards every request to moto and returns
/// moto's response, so `count_calls` can count what keyrun sent.
pub fn counting_proxy(moto: &'static Moto) -> LoopbackServer {
    LoopbackServer::start(None, move |request| {
        let headers: Vec<(String, String)> = request
            .headers
            .iter()
            .filter(|(name, _)| {
                matches!(
                    name.as_str(),
                    "x-amz-target" | "content-type" | "authorization" | "x-amz-date"
                )
            })
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect();
        let (status, _, body) = post(moto.port, &headers, &request.body);
        Some(Response {
            status,
            headers: Vec::new(),
            body: String::from_utf8(body).unwrap(),
        })
    })
}

/// Counts the requests for `action` that the server received.
pub fn count_calls(server: &LoopbackServer, action: &str) -> usize {
    let target = format!("secretsmanager.{action}");
    server.with_log(|log| {
        log.iter()
            .filter(|r| r.headers.get("x-amz-target") == Some(&target))
            .count()
    })
}

/// Builds a Secrets Manager error in the JSON 1.1 protocol: the code in `__type`
/// and in the `x-amzn-ErrorType` header, and the message.
pub fn error_response(status: u16, code: &str, message: &str) -> Response {
    Response::json(status, json!({"__type": code, "Message": message}))
        .with_header("x-amzn-ErrorType", code)
        .with_header("x-amzn-RequestId", &random_hex(16))
}

/// Builds a `GetSecretValue` response with a SecretString, in the shape of the
/// API reference's example.
pub fn value_response(name: &str, value: &str) -> Response {
    Response::json(
        200,
        json!({
            "ARN": format!("arn:aws:secretsmanager:{REGION}:123456789012:secret:{name}-a1b2c3"),
            "Name": name,
            "VersionId": "EXAMPLE1-90ab-cdef-fedc-ba987SECRET1",
            "SecretString": value,
            "VersionStages": ["AWSCURRENT"],
            "CreatedDate": 1523477145.713,
        }),
    )
}
