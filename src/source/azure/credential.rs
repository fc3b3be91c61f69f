//! Access tokens for Key Vault: client secret and workload identity through
//! the identity platform's `/{tenant}/oauth2/v2.0/token` endpoint, managed
//! identity through the App Service endpoint (`IDENTITY_ENDPOINT`) or the
//! instance metadata endpoint, and the Azure CLI.

use std::path::PathBuf;
use std::process::Stdio;

use serde::Deserialize;

use super::http::{humanize, Http, Reply, ADVICE};
use super::{AuthMethod, ErrorKind, Options, SourceError};
use crate::secret::{self, Secret};

/// The identity platform of the public cloud; `AZURE_AUTHORITY_HOST`
/// replaces it for other clouds.
const DEFAULT_AUTHORITY_HOST: &str = "https://login.microsoftonline.com";

/// The App Service and Functions managed identity API version.
const APP_SERVICE_API_VERSION: &str = "2019-08-01";

/// The instance metadata endpoint of Azure VMs. keyrun calls it only when
/// `auth = "managed"` is set and `IDENTITY_ENDPOINT` is not.
const IMDS_TOKEN_URL: &str = "http://169.254.169.254/metadata/identity/oauth2/token";
const IMDS_API_VERSION: &str = "2018-02-01";

const JWT_BEARER_ASSERTION: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The largest federated token file keyrun reads; a JWT is a few KB.
const MAX_ASSERTION_BYTES: u64 = 64 * 1024;

/// How much of `az`'s stderr an error shows.
const STDERR_TAIL_BYTES: usize = 1024;

/// The order in which `auto` tries the methods: configured service
/// credentials first, the developer's own CLI login last.
const CHAIN: [AuthMethod; 4] = [
    AuthMethod::Secret,
    AuthMethod::Workload,
    AuthMethod::Managed,
    AuthMethod::Cli,
];

/// The Azure variables of keyrun's environment, read once per batch.
pub struct Env {
    tenant_id: Option<String>,
    client_id: Option<String>,
    client_secret: Option<Secret>,
    federated_token_file: Option<PathBuf>,
    identity_endpoint: Option<String>,
    identity_header: Option<Secret>,
    authority_host: Option<String>,
}

impl Env {
    pub fn capture() -> Env {
        let text = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let secret = |name: &str| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(|v| Secret::new(std::os::unix::ffi::OsStringExt::into_vec(v)))
        };
        Env {
            tenant_id: text("AZURE_TENANT_ID"),
            client_id: text("AZURE_CLIENT_ID"),
            client_secret: secret("AZURE_CLIENT_SECRET"),
            federated_token_file: std::env::var_os("AZURE_FEDERATED_TOKEN_FILE")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
            identity_endpoint: text("IDENTITY_ENDPOINT"),
            identity_header: secret("IDENTITY_HEADER"),
            authority_host: text("AZURE_AUTHORITY_HOST"),
        }
    }

    /// Lists the variables that contain Azure credentials, which the child
    /// does not get unless `keep_backend_env` is set. `IDENTITY_HEADER` stays,
    /// because the App Service platform sets it for every process of the
    /// app, the child's own managed identity included.
    pub fn credential_env(&self) -> Vec<String> {
        match self.client_secret {
            Some(_) => vec!["AZURE_CLIENT_SECRET".to_string()],
            None => Vec::new(),
        }
    }
}

/// An access token and who it speaks for, for messages.
pub struct Token {
    pub value: Secret,
    pub identity: String,
}

/// The reason a method produced no token. Either it is not set up here, so
/// `auto` goes on, or it is set up and failed, so `auto` stops and reports
/// that failure.
enum Attempt {
    Unavailable(String),
    Failed(SourceError),
}

/// What every method needs.
struct Request<'a> {
    http: &'a Http,
    env: &'a Env,
    options: &'a Options,
    resource: &'a str,
}

impl Request<'_> {
    fn tenant_id(&self) -> Option<&str> {
        self.options
            .tenant_id
            .as_deref()
            .or(self.env.tenant_id.as_deref())
    }

    fn client_id(&self) -> Option<&str> {
        self.options
            .client_id
            .as_deref()
            .or(self.env.client_id.as_deref())
    }

    fn scope(&self) -> String {
        format!("{}/.default", self.resource)
    }

    fn fail(&self, kind: ErrorKind, message: String) -> Attempt {
        Attempt::Failed(SourceError::new(kind, message))
    }
}

fn label(method: AuthMethod) -> &'static str {
    match method {
        AuthMethod::Secret => "client secret",
        AuthMethod::Workload => "workload identity",
        AuthMethod::Managed => "managed identity",
        AuthMethod::Cli => "Azure CLI",
        AuthMethod::Auto => "auto",
    }
}

fn setting_name(method: AuthMethod) -> &'static str {
    match method {
        AuthMethod::Secret => "secret",
        AuthMethod::Workload => "workload",
        AuthMethod::Managed => "managed",
        AuthMethod::Cli => "cli",
        AuthMethod::Auto => "auto",
    }
}

/// Obtains a token for `resource` by the method the options choose; `auto`
/// tries [`CHAIN`] in order and lists what it tried when none works.
pub async fn acquire(
    http: &Http,
    env: &Env,
    options: &Options,
    resource: &str,
) -> Result<Token, SourceError> {
    let request = Request {
        http,
        env,
        options,
        resource,
    };

    if options.auth != AuthMethod::Auto {
        return match try_method(&request, options.auth, true).await {
            Ok(token) => Ok(token),
            Err(Attempt::Failed(err)) => Err(err),
            Err(Attempt::Unavailable(why)) => Err(SourceError::new(
                ErrorKind::Invalid,
                format!(
                    "auth = \"{}\" cannot be used: {why}",
                    setting_name(options.auth)
                ),
            )),
        };
    }

    let mut tried: Vec<String> = Vec::new();
    for method in CHAIN {
        match try_method(&request, method, false).await {
            Ok(token) => {
                tracing::debug!(method = label(method), "azure-kv: token acquired");
                return Ok(token);
            }
            Err(Attempt::Unavailable(why)) => {
                tracing::debug!(method = label(method), reason = %why, "azure-kv: method skipped");
                tried.push(format!("{} ({why})", label(method)));
            }
            Err(Attempt::Failed(mut err)) => {
                if !tried.is_empty() {
                    err.message
                        .push_str(&format!("; auto skipped before it: {}", tried.join(", ")));
                }
                return Err(err);
            }
        }
    }
    Err(SourceError::new(
        ErrorKind::Denied,
        format!(
            "no Azure credential is available; auto tried {}. Set AZURE_TENANT_ID, \
             AZURE_CLIENT_ID and AZURE_CLIENT_SECRET, run `az login`, or choose auth under [azure]",
            tried.join(", ")
        ),
    ))
}

async fn try_method(
    request: &Request<'_>,
    method: AuthMethod,
    explicit: bool,
) -> Result<Token, Attempt> {
    match method {
        AuthMethod::Secret => client_secret(request).await,
        AuthMethod::Workload => workload_identity(request).await,
        AuthMethod::Managed => managed_identity(request, explicit).await,
        AuthMethod::Cli => azure_cli(request, explicit).await,
        AuthMethod::Auto => Err(Attempt::Unavailable("auto is not a method".into())),
    }
}

/// The tenant and client id that the token endpoint methods need.
fn tenant_and_client<'a>(
    request: &'a Request<'_>,
    what: &str,
) -> Result<(&'a str, &'a str), Attempt> {
    let tenant = request.tenant_id().ok_or_else(|| {
        Attempt::Unavailable(format!(
            "{what} is set, but no tenant: set AZURE_TENANT_ID or tenant_id"
        ))
    })?;
    let client = request.client_id().ok_or_else(|| {
        Attempt::Unavailable(format!(
            "{what} is set, but no client id: set AZURE_CLIENT_ID or client_id"
        ))
    })?;
    Ok((tenant, client))
}

async fn client_secret(request: &Request<'_>) -> Result<Token, Attempt> {
    let Some(secret) = &request.env.client_secret else {
        return Err(Attempt::Unavailable(
            "AZURE_CLIENT_SECRET is not set".into(),
        ));
    };
    let (tenant, client) = tenant_and_client(request, "AZURE_CLIENT_SECRET")?;
    let secret = std::str::from_utf8(secret.expose()).map_err(|_| {
        request.fail(
            ErrorKind::Invalid,
            "AZURE_CLIENT_SECRET is not valid UTF-8".into(),
        )
    })?;
    let scope = request.scope();
    let form = [
        ("client_id", client),
        ("scope", scope.as_str()),
        ("client_secret", secret),
        ("grant_type", "client_credentials"),
    ];
    let hint = "check AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET; client secrets \
                expire, and a new one is made under the app registration's Certificates & secrets";
    let value = token_endpoint(request, tenant, client, &form, hint).await?;
    Ok(Token {
        value,
        identity: format!("the client secret of client {client} in tenant {tenant}"),
    })
}

async fn workload_identity(request: &Request<'_>) -> Result<Token, Attempt> {
    let Some(path) = &request.env.federated_token_file else {
        return Err(Attempt::Unavailable(
            "AZURE_FEDERATED_TOKEN_FILE is not set".into(),
        ));
    };
    let (tenant, client) = tenant_and_client(request, "AZURE_FEDERATED_TOKEN_FILE")?;
    let assertion = read_assertion(request, path)?;
    let assertion = std::str::from_utf8(assertion.expose()).map_err(|_| {
        request.fail(
            ErrorKind::Invalid,
            format!(
                "the federated token in {} is not valid UTF-8",
                path.display()
            ),
        )
    })?;
    let scope = request.scope();
    let form = [
        ("client_id", client),
        ("scope", scope.as_str()),
        ("client_assertion_type", JWT_BEARER_ASSERTION),
        ("client_assertion", assertion),
        ("grant_type", "client_credentials"),
    ];
    let hint = "check the federated credential of the app registration or managed identity: its \
                issuer and subject must match the token in AZURE_FEDERATED_TOKEN_FILE";
    let value = token_endpoint(request, tenant, client, &form, hint).await?;
    Ok(Token {
        value,
        identity: format!("the workload identity of client {client} in tenant {tenant}"),
    })
}

/// Reads the federated token, which Kubernetes rotates, fresh on each run.
fn read_assertion(request: &Request<'_>, path: &std::path::Path) -> Result<Secret, Attempt> {
    let shown = path.display();
    let bytes = crate::config::read_regular_file(path, MAX_ASSERTION_BYTES).map_err(|err| {
        request.fail(
            ErrorKind::Invalid,
            format!(
                "cannot read AZURE_FEDERATED_TOKEN_FILE {shown}: {err}; check the projected \
                 service account token volume"
            ),
        )
    })?;
    let mut assertion = Secret::new(bytes.to_vec());
    secret::normalize(&mut assertion, false).map_err(|err| {
        request.fail(
            ErrorKind::Invalid,
            format!("AZURE_FEDERATED_TOKEN_FILE {shown} does not hold a token: {err}"),
        )
    })?;
    Ok(assertion)
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
}

/// The identity platform's OAuth 2.0 error body.
#[derive(Deserialize, Default)]
struct TokenError {
    error: Option<String>,
    error_description: Option<String>,
    /// The App Service managed identity endpoint reports errors in
    /// `message` (with a `correlationId`), as MSAL's client reads them.
    message: Option<String>,
}

impl TokenError {
    fn parse(reply: &Reply) -> TokenError {
        serde_json::from_slice(&reply.body).unwrap_or_default()
    }

    fn describe(&self) -> String {
        match (&self.error, &self.error_description, &self.message) {
            (Some(error), Some(description), _) => format!("{error}: {}", one_line(description)),
            (Some(error), None, _) => error.clone(),
            (None, Some(description), _) => one_line(description),
            (None, None, Some(message)) => one_line(message),
            (None, None, None) => "no error details in the response".to_string(),
        }
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Returns the authority host: `AZURE_AUTHORITY_HOST`, else the public
/// cloud's.
fn authority(request: &Request<'_>) -> Result<String, Attempt> {
    let host = request
        .env
        .authority_host
        .as_deref()
        .unwrap_or(DEFAULT_AUTHORITY_HOST)
        .trim_end_matches('/');
    if !host.starts_with("https://") {
        return Err(request.fail(
            ErrorKind::Invalid,
            format!(
                "AZURE_AUTHORITY_HOST {host:?} must be an https:// URL, such as \
                 https://login.microsoftonline.us"
            ),
        ));
    }
    Ok(host.to_string())
}

/// Posts a client credentials grant to `/{tenant}/oauth2/v2.0/token`.
async fn token_endpoint(
    request: &Request<'_>,
    tenant: &str,
    client: &str,
    form: &[(&str, &str)],
    hint: &str,
) -> Result<Secret, Attempt> {
    if !tenant
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    {
        return Err(request.fail(
            ErrorKind::Invalid,
            format!("tenant {tenant:?} is not a tenant id or domain"),
        ));
    }
    let url = format!("{}/{tenant}/oauth2/v2.0/token", authority(request)?);
    let timeout = request.options.timeout;
    tracing::debug!(url = %url, client, "azure-kv: requesting a token");

    let http = request.http;
    let reply = http
        .send(|| http.public().post(&url).form(form), timeout)
        .await
        .map_err(|err| {
            Attempt::Failed(err.into_source_error(
                &format!("the token endpoint {url}"),
                timeout,
                &ADVICE,
            ))
        })?;

    if reply.status.is_success() {
        return parse_access_token(request, &reply, &url);
    }
    let details = TokenError::parse(&reply).describe();
    let (kind, next) = if reply.status.as_u16() == 429 || reply.status.is_server_error() {
        (
            ErrorKind::Unreachable,
            format!("{} attempts failed; try again later", reply.attempts),
        )
    } else {
        (ErrorKind::Denied, hint.to_string())
    };
    Err(request.fail(
        kind,
        format!(
            "the token request to {url} for client {client} failed ({}): {details}; {next}",
            reply.status
        ),
    ))
}

fn parse_access_token(request: &Request<'_>, reply: &Reply, from: &str) -> Result<Secret, Attempt> {
    // The parse error is left out of the message, because it could quote
    // part of the body.
    let parsed: TokenResponse = serde_json::from_slice(&reply.body).map_err(|_| {
        request.fail(
            ErrorKind::Invalid,
            format!("the response of {from} has no access_token"),
        )
    })?;
    let token = Secret::new(parsed.access_token.into_bytes());
    if token.is_empty() {
        return Err(request.fail(
            ErrorKind::Invalid,
            format!("{from} returned an empty access_token"),
        ));
    }
    Ok(token)
}

async fn managed_identity(request: &Request<'_>, explicit: bool) -> Result<Token, Attempt> {
    let client_id = request.client_id();
    let mut query: Vec<(&str, &str)> = vec![("resource", request.resource)];
    if let Some(client_id) = client_id {
        query.push(("client_id", client_id));
    }
    let timeout = request.options.timeout;
    let http = request.http;

    let (url, identity, reply) = if let Some(endpoint) = &request.env.identity_endpoint {
        let Some(header) = &request.env.identity_header else {
            return Err(Attempt::Unavailable(
                "IDENTITY_ENDPOINT is set but IDENTITY_HEADER is not".into(),
            ));
        };
        let header = reqwest::header::HeaderValue::from_bytes(header.expose())
            .map(|mut value| {
                value.set_sensitive(true);
                value
            })
            .map_err(|_| {
                request.fail(
                    ErrorKind::Invalid,
                    "IDENTITY_HEADER contains bytes an HTTP header cannot carry".into(),
                )
            })?;
        query.push(("api-version", APP_SERVICE_API_VERSION));
        let identity = "the App Service managed identity".to_string();
        let reply = http
            .send(
                || {
                    http.local()
                        .get(endpoint)
                        .query(&query)
                        .header("X-IDENTITY-HEADER", header.clone())
                },
                timeout,
            )
            .await;
        (endpoint.clone(), identity, reply)
    } else if explicit {
        query.push(("api-version", IMDS_API_VERSION));
        let identity = "the managed identity of this VM".to_string();
        let reply = http
            .send(
                || {
                    http.local()
                        .get(IMDS_TOKEN_URL)
                        .query(&query)
                        .header("Metadata", "true")
                },
                timeout,
            )
            .await;
        (IMDS_TOKEN_URL.to_string(), identity, reply)
    } else {
        return Err(Attempt::Unavailable(
            "IDENTITY_ENDPOINT is not set; the instance metadata endpoint is tried only with \
             auth = \"managed\""
                .into(),
        ));
    };

    let peer = format!("the managed identity endpoint {url}");
    let reply =
        reply.map_err(|err| Attempt::Failed(err.into_source_error(&peer, timeout, &ADVICE)))?;
    if !reply.status.is_success() {
        let details = TokenError::parse(&reply).describe();
        let which = match client_id {
            Some(id) => format!("the user-assigned identity {id}"),
            None => "a system-assigned identity".to_string(),
        };
        return Err(request.fail(
            ErrorKind::Denied,
            format!(
                "{peer} returned {}: {details}; check that {which} is assigned to this \
                 resource (client_id or AZURE_CLIENT_ID names a user-assigned one)",
                reply.status
            ),
        ));
    }
    let value = parse_access_token(request, &reply, &peer)?;
    Ok(Token { value, identity })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CliToken {
    access_token: String,
}

async fn azure_cli(request: &Request<'_>, explicit: bool) -> Result<Token, Attempt> {
    let timeout = request.options.timeout;
    let mut command = tokio::process::Command::new("az");
    command.args([
        "account",
        "get-access-token",
        "--output",
        "json",
        "--resource",
        request.resource,
    ]);
    if let Some(tenant) = &request.options.tenant_id {
        command.args(["--tenant", tenant]);
    }
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);

    tracing::debug!("azure-kv: running az account get-access-token");
    let child = match command.spawn() {
        Ok(child) => child,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            if explicit {
                return Err(request.fail(
                    ErrorKind::NotFound,
                    "az (the Azure CLI) is not on PATH; install it and run `az login`, or \
                     choose another auth under [azure]"
                        .into(),
                ));
            }
            return Err(Attempt::Unavailable("az is not on PATH".into()));
        }
        Err(err) => return Err(request.fail(ErrorKind::Invalid, format!("cannot run az: {err}"))),
    };

    let output = match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(output)) => output,
        Ok(Err(err)) => {
            return Err(request.fail(
                ErrorKind::Invalid,
                format!("cannot read the output of az account get-access-token: {err}"),
            ))
        }
        Err(_) => {
            return Err(request.fail(
                ErrorKind::TimedOut,
                format!(
                    "az account get-access-token did not finish within {}; run it yourself to \
                     see what it waits for, or raise timeout under [azure]",
                    humanize(timeout)
                ),
            ))
        }
    };
    let stdout = Secret::new(output.stdout);

    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail = tail(stderr.trim(), STDERR_TAIL_BYTES);
        let status = match output.status.code() {
            Some(code) => format!("exit status {code}"),
            None => "killed by a signal".to_string(),
        };
        return Err(request.fail(
            ErrorKind::Denied,
            format!(
                "az account get-access-token --resource {} failed ({status}): {}; run `az login`",
                request.resource,
                one_line(tail)
            ),
        ));
    }
    let parsed: CliToken = serde_json::from_slice(stdout.expose()).map_err(|_| {
        request.fail(
            ErrorKind::Invalid,
            "az account get-access-token printed no accessToken; update the Azure CLI".into(),
        )
    })?;
    Ok(Token {
        value: Secret::new(parsed.access_token.into_bytes()),
        identity: "the account signed in to the Azure CLI".to_string(),
    })
}

fn tail(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_error_shows_error_and_description() {
        let error = TokenError {
            error: Some("invalid_client".into()),
            error_description: Some("AADSTS7000215: Invalid client secret.\r\nTrace ID: x".into()),
            message: None,
        };
        assert_eq!(
            error.describe(),
            "invalid_client: AADSTS7000215: Invalid client secret. Trace ID: x"
        );
    }

    #[test]
    fn tail_keeps_char_boundary() {
        assert_eq!(tail("héllo", 4), "llo");
        assert_eq!(tail("abc", 10), "abc");
    }
}
