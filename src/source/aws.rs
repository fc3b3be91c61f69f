//! `aws-sm:SECRET_ID[?OPTIONS][#JSON_KEY]`: a secret from AWS Secrets
//! Manager, read with `GetSecretValue` through `aws-sdk-secretsmanager`.
//!
//! SECRET_ID is a secret name or a full ARN. Credentials and the region come
//! from `aws-config`'s standard chain: the environment, the shared config
//! and credentials files with profiles and SSO, web identity, the ECS
//! container endpoint and instance metadata. So `AWS_REGION`, `AWS_PROFILE`,
//! `AWS_ENDPOINT_URL_SECRETS_MANAGER`, `AWS_ENDPOINT_URL` and
//! `AWS_EC2_METADATA_DISABLED` work as they do for the AWS CLI.
//!
//! Variables that name the same secret and version with the same client
//! settings share one `GetSecretValue` call, and `#JSON_KEY` picks a field
//! of that one value. The AWS credentials stay in the child's environment,
//! because the child commonly needs the same identity (terraform, the AWS
//! CLI, boto3), so no `credential_env` is reported.

use std::time::{Duration, SystemTime};

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{AppName, BehaviorVersion, Region};
use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_secretsmanager::config::http::HttpResponse;
use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_secretsmanager::operation::get_secret_value::{
    GetSecretValueError, GetSecretValueOutput,
};
use aws_sdk_secretsmanager::Client;
use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};

use super::{Context, ErrorKind, Request, Resolved, Source, SourceError};
use crate::config::Settings;
use crate::reference::Reference;
use crate::secret::Secret;

pub const SETTINGS: &[&str] = &[
    "region",
    "profile",
    "version_id",
    "version_stage",
    "endpoint_url",
    "timeout",
];

/// The bound on connecting and on one whole `GetSecretValue` call,
/// credential lookup and retries included.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The staging label Secrets Manager reads when no version is named.
const DEFAULT_STAGE: &str = "AWSCURRENT";

/// The attempts of the SDK's standard retry mode, for messages.
const MAX_ATTEMPTS: u32 = 3;

pub struct AwsSource;

/// The settings that shape a client, so that references with equal
/// settings share one.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ClientOptions {
    region: Option<String>,
    profile: Option<String>,
    endpoint_url: Option<String>,
    timeout: Duration,
}

/// The version a reference requests: a version id, a staging label, or
/// both (Secrets Manager then requires that they name the same version).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Version {
    version_id: Option<String>,
    version_stage: Option<String>,
}

impl Version {
    /// "version stage AWSCURRENT" or "version ID", for messages.
    fn describe(&self) -> String {
        match (&self.version_id, &self.version_stage) {
            (Some(id), Some(stage)) => format!("version {id} (stage {stage})"),
            (Some(id), None) => format!("version {id}"),
            (None, Some(stage)) => format!("version stage {stage}"),
            (None, None) => format!("version stage {DEFAULT_STAGE}"),
        }
    }
}

/// One distinct secret version of a batch and the requests that read it.
/// References that differ only in their `#JSON_KEY`, or in options that
/// merge to the same settings, share one plan.
struct Planned {
    secret_id: String,
    version: Version,
    client: ClientOptions,
    indexes: Vec<usize>,
}

/// A value as Secrets Manager returned it, before `#JSON_KEY` is applied.
struct Fetched {
    value: Secret,
    version_id: Option<String>,
    created: Option<SystemTime>,
    region: String,
}

fn read_options(
    settings: &Settings<'_>,
    reference: &Reference,
) -> Result<(ClientOptions, Version), SourceError> {
    let invalid =
        |err: anyhow::Error| SourceError::new(ErrorKind::Invalid, format!("{reference}: {err:#}"));
    let string = |key: &str| -> Result<Option<String>, SourceError> {
        Ok(settings
            .string(key)
            .map_err(invalid)?
            .filter(|v| !v.is_empty()))
    };
    let client = ClientOptions {
        region: string("region")?,
        profile: string("profile")?,
        endpoint_url: string("endpoint_url")?,
        timeout: settings
            .duration("timeout")
            .map_err(invalid)?
            .unwrap_or(DEFAULT_TIMEOUT),
    };
    let version_id = string("version_id")?;
    let version_stage = match (&version_id, string("version_stage")?) {
        (_, Some(stage)) => Some(stage),
        (None, None) => Some(DEFAULT_STAGE.to_string()),
        (Some(_), None) => None,
    };
    Ok((
        client,
        Version {
            version_id,
            version_stage,
        },
    ))
}

impl Source for AwsSource {
    fn resolve(
        &self,
        requests: &[&Request],
        context: &mut Context<'_>,
    ) -> Vec<Result<Resolved, SourceError>> {
        let mut results: Vec<Option<Result<Resolved, SourceError>>> =
            requests.iter().map(|_| None).collect();
        let mut planned: Vec<Planned> = Vec::new();

        for (index, request) in requests.iter().enumerate() {
            let reference = &request.reference;
            match read_options(&context.settings("aws", request), reference) {
                Err(err) => results[index] = Some(Err(err)),
                Ok((client, version)) => {
                    let secret_id = &reference.rest;
                    match planned.iter_mut().find(|p| {
                        p.secret_id == *secret_id && p.version == version && p.client == client
                    }) {
                        Some(same) => same.indexes.push(index),
                        None => planned.push(Planned {
                            secret_id: secret_id.clone(),
                            version,
                            client,
                            indexes: vec![index],
                        }),
                    }
                }
            }
        }

        if !planned.is_empty() {
            match context.runtime.get() {
                Ok(runtime) => {
                    let fetched = runtime.block_on(fetch_all(&planned));
                    for (plan, result) in planned.iter().zip(fetched) {
                        for &index in &plan.indexes {
                            let reference = &requests[index].reference;
                            results[index] = Some(match &result {
                                Ok(fetched) => pick_field(fetched, plan, reference),
                                Err(err) => Err(err.for_reference(reference)),
                            });
                        }
                    }
                }
                // The runtime serves the whole batch, so its error names no
                // reference.
                Err(err) => {
                    for plan in &planned {
                        for &index in &plan.indexes {
                            results[index] = Some(Err(copy_error(&err)));
                        }
                    }
                }
            }
        }

        results
            .into_iter()
            .map(|slot| {
                slot.unwrap_or_else(|| {
                    Err(SourceError::new(
                        ErrorKind::Invalid,
                        "aws-sm: a request was left unresolved",
                    ))
                })
            })
            .collect()
    }
}

/// Reads each distinct secret version, sharing one client among the
/// secrets with the same client settings. The clients, and with them the
/// pooled connections and their buffers, are dropped on return. The errors
/// name the secret but no reference, because one plan serves several
/// references and one client several plans.
async fn fetch_all(planned: &[Planned]) -> Vec<Result<Fetched, SourceError>> {
    let mut clients: Vec<(ClientOptions, Result<RegionalClient, SourceError>)> = Vec::new();
    let mut results = Vec::with_capacity(planned.len());
    for plan in planned {
        let position = match clients
            .iter()
            .position(|(options, _)| *options == plan.client)
        {
            Some(position) => position,
            None => {
                let client = build_client(&plan.client).await;
                clients.push((plan.client.clone(), client));
                clients.len() - 1
            }
        };
        let result = match &clients[position].1 {
            Err(err) => Err(copy_error(err)),
            Ok(regional) => get_secret_value(&regional.client, &regional.region, plan).await,
        };
        results.push(result);
    }
    results
}

/// A Secrets Manager client and the region it resolved.
struct RegionalClient {
    client: Client,
    region: String,
}

/// Loads the shared AWS configuration for one set of client settings and
/// builds a Secrets Manager client.
async fn build_client(options: &ClientOptions) -> Result<RegionalClient, SourceError> {
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(options.timeout)
        .operation_timeout(options.timeout)
        .build();
    // The SDK's default HTTPS client would bring aws-lc, whose entropy
    // collection costs tens of milliseconds per process. This client is
    // rustls on ring, as `http::client_builder` sets up for the others.
    crate::source::http::check_ssl_cert_file("aws-sm")?;
    let http_client = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http_client)
        .retry_config(RetryConfig::standard().with_max_attempts(MAX_ATTEMPTS))
        .timeout_config(timeouts);
    // CloudTrail records the user agent, so the app name shows which tool
    // read the secret. `new` accepts any ASCII letters, so it cannot fail.
    if let Ok(app_name) = AppName::new("keyrun") {
        loader = loader.app_name(app_name);
    }
    if let Some(region) = &options.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(profile) = &options.profile {
        loader = loader.profile_name(profile);
    }
    if let Some(endpoint_url) = &options.endpoint_url {
        loader = loader.endpoint_url(endpoint_url);
    }
    let config = loader.load().await;

    let Some(region) = config.region().map(|r| r.to_string()) else {
        return Err(SourceError::new(
            ErrorKind::Invalid,
            format!(
                "no AWS region is set; set region= in the reference, region under [aws] in the \
                 keyrun configuration, AWS_REGION, or region in the AWS profile{}",
                options
                    .profile
                    .as_ref()
                    .map(|p| format!(" {p}"))
                    .unwrap_or_default()
            ),
        ));
    };
    tracing::debug!(region = %region, profile = ?options.profile, "aws-sm: client configured");
    Ok(RegionalClient {
        client: Client::new(&config),
        region,
    })
}

async fn get_secret_value(
    client: &Client,
    region: &str,
    plan: &Planned,
) -> Result<Fetched, SourceError> {
    tracing::debug!(
        secret = %plan.secret_id,
        region,
        version = %plan.version.describe(),
        "aws-sm: GetSecretValue"
    );
    let output = client
        .get_secret_value()
        .secret_id(&plan.secret_id)
        .set_version_id(plan.version.version_id.clone())
        .set_version_stage(plan.version.version_stage.clone())
        .send()
        .await
        .map_err(|err| request_error(&err, plan, region))?;
    read_output(output, plan, region)
}

/// Moves the value out of the response into a [`Secret`]: `SecretString`
/// as it is, `SecretBinary` when it is UTF-8.
fn read_output(
    output: GetSecretValueOutput,
    plan: &Planned,
    region: &str,
) -> Result<Fetched, SourceError> {
    let secret = describe_secret(plan, region);
    let version_id = output.version_id;
    let created = output
        .created_date
        .and_then(|date| SystemTime::try_from(date).ok());
    let value = match (output.secret_string, output.secret_binary) {
        (Some(text), _) => Secret::new(text.into_bytes()),
        (None, Some(blob)) => {
            let bytes = Secret::new(blob.into_inner());
            if std::str::from_utf8(bytes.expose()).is_err() {
                return Err(SourceError::new(
                    ErrorKind::Invalid,
                    format!(
                        "{secret} holds a SecretBinary that is not UTF-8 text, which no \
                         environment variable can carry; store the key as SecretString"
                    ),
                ));
            }
            bytes
        }
        (None, None) => Secret::new(Vec::new()),
    };
    if value.is_empty() {
        return Err(SourceError::new(
            ErrorKind::Invalid,
            format!(
                "{secret} has an empty value; store the key with `aws secretsmanager \
                 put-secret-value --secret-id {} --secret-string ...`",
                plan.secret_id
            ),
        ));
    }
    Ok(Fetched {
        value,
        version_id,
        created,
        region: region.to_string(),
    })
}

/// Returns the whole value, or the `#JSON_KEY` field of a JSON object value.
fn pick_field(
    fetched: &Fetched,
    plan: &Planned,
    reference: &Reference,
) -> Result<Resolved, SourceError> {
    let value = match &reference.field {
        None => fetched.value.duplicate(),
        Some(key) => json_field(fetched, plan, reference, key)?,
    };
    let mut resolved = Resolved::new(value);
    resolved.version = fetched.version_id.clone();
    resolved.created = fetched.created;
    Ok(resolved)
}

fn json_field(
    fetched: &Fetched,
    plan: &Planned,
    reference: &Reference,
    key: &str,
) -> Result<Secret, SourceError> {
    let secret = describe_secret(plan, &fetched.region);
    let invalid = |why: String| SourceError::new(ErrorKind::Invalid, format!("{reference}: {why}"));

    // The parse error is left out of the message, because it could quote
    // part of the value.
    let parsed: serde_json::Value =
        serde_json::from_slice(fetched.value.expose()).map_err(|_| {
            invalid(format!(
                "#{key} needs a JSON object, but {secret} is not valid JSON; drop #{key} to use \
                 the whole value"
            ))
        })?;
    let serde_json::Value::Object(mut fields) = parsed else {
        return Err(invalid(format!(
            "#{key} needs a JSON object, but {secret} holds a JSON {}; drop #{key} to use the \
             whole value",
            json_type(&parsed)
        )));
    };
    let Some(field) = fields.remove(key) else {
        let names: Vec<&str> = fields.keys().map(String::as_str).collect();
        return Err(SourceError::new(
            ErrorKind::NotFound,
            format!(
                "{reference}: {secret} has no field {key:?}; its fields are: {}",
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            ),
        ));
    };
    let value = match field {
        serde_json::Value::String(text) => Secret::new(text.into_bytes()),
        serde_json::Value::Number(number) => Secret::new(number.to_string().into_bytes()),
        other => {
            return Err(invalid(format!(
                "field {key:?} of {secret} is a JSON {}, not a string",
                json_type(&other)
            )))
        }
    };
    if value.is_empty() {
        return Err(invalid(format!("field {key:?} of {secret} is empty")));
    }
    Ok(value)
}

fn json_type(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "boolean",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    }
}

/// Maps a failed `GetSecretValue` to a message that names the secret, the
/// region and the next step. The kind of failure comes from the SDK's
/// typed variants and error codes, never from the error text.
fn request_error(
    err: &SdkError<GetSecretValueError, HttpResponse>,
    plan: &Planned,
    region: &str,
) -> SourceError {
    let secret = describe_secret(plan, region);
    let id = &plan.secret_id;

    if let Some(credentials) = find_source::<CredentialsError>(err) {
        return credentials_error(credentials, plan, region);
    }

    match err {
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            service_error(service.err(), status, plan, region)
        }
        SdkError::TimeoutError(_) => SourceError::new(
            ErrorKind::TimedOut,
            format!(
                "Secrets Manager at {} did not answer within {} for {secret}; check \
                 the network and the endpoint, or raise timeout=",
                endpoint(plan, region),
                format_duration(plan.client.timeout)
            ),
        ),
        SdkError::DispatchFailure(failure) => {
            let io = find_source::<std::io::Error>(err);
            let refused = io.is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused);
            if refused {
                SourceError::new(
                    ErrorKind::Unreachable,
                    format!(
                        "Secrets Manager at {} refused the connection for {secret} \
                         ({MAX_ATTEMPTS} attempts); check endpoint_url, \
                         AWS_ENDPOINT_URL_SECRETS_MANAGER and AWS_ENDPOINT_URL",
                        endpoint(plan, region)
                    ),
                )
            } else if failure.is_timeout() {
                SourceError::new(
                    ErrorKind::TimedOut,
                    format!(
                        "connecting to Secrets Manager at {} timed out after {} for \
                         {secret}; check the network, a proxy (HTTPS_PROXY) and the endpoint",
                        endpoint(plan, region),
                        format_duration(plan.client.timeout)
                    ),
                )
            } else {
                SourceError::new(
                    ErrorKind::Unreachable,
                    format!(
                        "cannot reach Secrets Manager at {} for {secret} ({}); check \
                         the network and the endpoint",
                        endpoint(plan, region),
                        error_chain(err)
                    ),
                )
            }
        }
        SdkError::ResponseError(_) => SourceError::new(
            ErrorKind::Unreachable,
            format!(
                "Secrets Manager at {} sent a response for {secret} that the SDK \
                 cannot read ({}); check that the endpoint is Secrets Manager",
                endpoint(plan, region),
                error_chain(err)
            ),
        ),
        _ => SourceError::new(
            ErrorKind::Invalid,
            format!(
                "the GetSecretValue request for {id} in region {region} failed: {}",
                error_chain(err)
            ),
        ),
    }
}

fn service_error(
    error: &GetSecretValueError,
    status: u16,
    plan: &Planned,
    region: &str,
) -> SourceError {
    let secret = describe_secret(plan, region);
    let id = &plan.secret_id;
    let details = describe_service_error(error);

    match error {
        GetSecretValueError::ResourceNotFoundException(_) => SourceError::new(
            ErrorKind::NotFound,
            format!(
                "{secret} was not found ({details}); check the name or ARN, the \
                 version and the region, for example with `aws secretsmanager list-secrets \
                 --region {region}`"
            ),
        ),
        GetSecretValueError::DecryptionFailure(_) => SourceError::new(
            ErrorKind::Denied,
            format!(
                "Secrets Manager cannot decrypt {secret} ({details}); grant the \
                 identity kms:Decrypt on the secret's KMS key, in the key policy or an IAM \
                 policy, and check that the key is enabled"
            ),
        ),
        GetSecretValueError::InvalidRequestException(_) => SourceError::new(
            ErrorKind::Invalid,
            format!(
                "Secrets Manager rejected the request for {secret} ({details}); if \
                 the secret is scheduled for deletion, restore it with `aws secretsmanager \
                 restore-secret --secret-id {id} --region {region}`"
            ),
        ),
        GetSecretValueError::InvalidParameterException(_) => SourceError::new(
            ErrorKind::Invalid,
            format!(
                "Secrets Manager rejected a parameter of the request for {secret} \
                 ({details}); check the secret id, version_id and version_stage"
            ),
        ),
        GetSecretValueError::InternalServiceError(_) => unavailable(plan, region, &details),
        other => match other.code() {
            Some("AccessDeniedException") => SourceError::new(
                ErrorKind::Denied,
                format!(
                    "access to {secret} was denied ({details}); grant the identity \
                     secretsmanager:GetSecretValue on the secret in an IAM policy (and in the \
                     secret's resource policy, if it has one), or use another profile"
                ),
            ),
            Some(
                "ThrottlingException"
                | "Throttling"
                | "TooManyRequestsException"
                | "RequestLimitExceeded",
            ) => SourceError::new(
                ErrorKind::Unreachable,
                format!(
                    "Secrets Manager throttled the reads of {secret} ({details}, \
                     {MAX_ATTEMPTS} attempts with backoff); try again later, or spread out the \
                     reads"
                ),
            ),
            Some(
                "UnrecognizedClientException"
                | "InvalidClientTokenId"
                | "InvalidSignatureException"
                | "SignatureDoesNotMatch"
                | "ExpiredTokenException",
            ) => SourceError::new(
                ErrorKind::Denied,
                format!(
                    "Secrets Manager rejected the AWS credentials for {secret} \
                     ({details}); check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and \
                     AWS_SESSION_TOKEN or the profile, or renew them (`aws sso login`)"
                ),
            ),
            _ if status >= 500 => unavailable(plan, region, &details),
            _ => SourceError::new(
                ErrorKind::Invalid,
                format!("GetSecretValue failed for {secret} ({details})"),
            ),
        },
    }
}

fn unavailable(plan: &Planned, region: &str, details: &str) -> SourceError {
    SourceError::new(
        ErrorKind::Unreachable,
        format!(
            "Secrets Manager failed to return {} ({details}, {MAX_ATTEMPTS} attempts with \
             backoff); try again later",
            describe_secret(plan, region)
        ),
    )
}

fn credentials_error(error: &CredentialsError, plan: &Planned, region: &str) -> SourceError {
    let secret = describe_secret(plan, region);
    match error {
        CredentialsError::CredentialsNotLoaded(_) => {
            let metadata = if std::env::var("AWS_EC2_METADATA_DISABLED")
                .is_ok_and(|v| v.eq_ignore_ascii_case("true"))
            {
                "EC2 instance metadata (skipped: AWS_EC2_METADATA_DISABLED=true)"
            } else {
                "EC2 instance metadata"
            };
            SourceError::new(
                ErrorKind::Denied,
                format!(
                    "no AWS credentials found to read {secret}; tried the \
                     environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY), the shared config \
                     and credentials files (~/.aws/config, ~/.aws/credentials, profile {}), web \
                     identity (AWS_WEB_IDENTITY_TOKEN_FILE, AWS_ROLE_ARN), the ECS container \
                     endpoint (AWS_CONTAINER_CREDENTIALS_RELATIVE_URI) and {metadata}; set \
                     AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE (after `aws \
                     sso login` or `aws configure`)",
                    plan.client
                        .profile
                        .clone()
                        .or_else(|| std::env::var("AWS_PROFILE").ok())
                        .unwrap_or_else(|| "default".to_string())
                ),
            )
        }
        CredentialsError::ProviderTimedOut(_) => SourceError::new(
            ErrorKind::TimedOut,
            format!(
                "loading AWS credentials to read {secret} timed out ({}); check the \
                 credential source of the profile, or set AWS_ACCESS_KEY_ID and \
                 AWS_SECRET_ACCESS_KEY",
                error_chain(error)
            ),
        ),
        CredentialsError::InvalidConfiguration(_) => SourceError::new(
            ErrorKind::Invalid,
            format!(
                "the AWS credential configuration is invalid ({}); fix \
                 ~/.aws/config or the AWS_* variables",
                error_chain(error)
            ),
        ),
        _ => SourceError::new(
            ErrorKind::Denied,
            format!(
                "loading AWS credentials to read {secret} failed ({}); renew them \
                 (`aws sso login`) or check the profile",
                error_chain(error)
            ),
        ),
    }
}

/// `Code: message` as Secrets Manager sent them, on one line.
fn describe_service_error(error: &GetSecretValueError) -> String {
    let message = error
        .message()
        .map(|m| m.split_whitespace().collect::<Vec<_>>().join(" "));
    match (error.code(), message) {
        (Some(code), Some(message)) if !message.is_empty() => format!("{code}: {message}"),
        (Some(code), _) => code.to_string(),
        (None, Some(message)) => message,
        (None, None) => "no error details in the response".to_string(),
    }
}

/// Finds the first error of type `T` in `err`'s source chain.
fn find_source<'e, T: std::error::Error + 'static>(
    err: &'e (dyn std::error::Error + 'static),
) -> Option<&'e T> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(error) = current {
        if let Some(found) = error.downcast_ref::<T>() {
            return Some(found);
        }
        current = error.source();
    }
    None
}

/// Joins the messages of an error's source chain with ": ".
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(error) = current {
        let text = error.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        current = error.source();
    }
    parts.join(": ")
}

/// Names the endpoint the client calls, as far as keyrun can tell: the option,
/// the standard variables, else the public regional endpoint.
fn endpoint(plan: &Planned, region: &str) -> String {
    // NOTE: an endpoint_url set in ~/.aws/config is used by the SDK but not
    // shown here, so such a message names the public endpoint instead.
    plan.client
        .endpoint_url
        .clone()
        .or_else(|| std::env::var("AWS_ENDPOINT_URL_SECRETS_MANAGER").ok())
        .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok())
        .filter(|url| !url.is_empty())
        .unwrap_or_else(|| format!("https://secretsmanager.{region}.amazonaws.com"))
}

/// "secret ID (version stage AWSCURRENT) in region REGION", for messages.
fn describe_secret(plan: &Planned, region: &str) -> String {
    format!(
        "secret {} ({}) in region {region}",
        plan.secret_id,
        plan.version.describe()
    )
}

fn format_duration(duration: Duration) -> String {
    if duration.subsec_millis() == 0 {
        format!("{}s", duration.as_secs())
    } else {
        format!("{}ms", duration.as_millis())
    }
}

fn copy_error(err: &SourceError) -> SourceError {
    SourceError::new(err.kind, err.message.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plans one request for `text`; returns the plan and the parsed
    /// reference.
    fn planned(text: &str) -> (Planned, Reference) {
        let reference = Reference::parse(text).unwrap();
        let config = crate::config::Config::default();
        let settings = Settings::new(&config, None, "aws", &reference);
        let (client, version) = read_options(&settings, &reference).unwrap();
        let plan = Planned {
            secret_id: reference.rest.clone(),
            version,
            client,
            indexes: vec![0],
        };
        (plan, reference)
    }

    fn fetched(value: &str) -> Fetched {
        Fetched {
            value: Secret::new(value.as_bytes().to_vec()),
            version_id: Some("v1".to_string()),
            created: None,
            region: "us-east-1".to_string(),
        }
    }

    #[test]
    fn default_version_is_awscurrent() {
        let (plan, _) = planned("aws-sm:prod/openai");
        assert_eq!(plan.version.version_id, None);
        assert_eq!(plan.version.version_stage.as_deref(), Some("AWSCURRENT"));
        assert_eq!(plan.client.timeout, DEFAULT_TIMEOUT);
    }

    #[test]
    fn version_id_sends_no_default_stage() {
        let (plan, _) = planned("aws-sm:prod/openai?version_id=abc");
        assert_eq!(plan.version.version_id.as_deref(), Some("abc"));
        assert_eq!(plan.version.version_stage, None);
    }

    #[test]
    fn options_are_read() {
        let (plan, _) = planned(
            "aws-sm:arn:aws:secretsmanager:eu-west-1:1:secret:x?region=eu-west-1&profile=ci&endpoint_url=http://127.0.0.1:1&timeout=2s&version_stage=AWSPREVIOUS",
        );
        assert_eq!(
            plan.secret_id,
            "arn:aws:secretsmanager:eu-west-1:1:secret:x"
        );
        assert_eq!(plan.client.region.as_deref(), Some("eu-west-1"));
        assert_eq!(plan.client.profile.as_deref(), Some("ci"));
        assert_eq!(
            plan.client.endpoint_url.as_deref(),
            Some("http://127.0.0.1:1")
        );
        assert_eq!(plan.client.timeout, Duration::from_secs(2));
        assert_eq!(plan.version.version_stage.as_deref(), Some("AWSPREVIOUS"));
    }

    #[test]
    fn json_field_is_picked() {
        let (plan, reference) = planned("aws-sm:x#api_key");
        let value = json_field(
            &fetched(r#"{"api_key":"sk-1","org":"o"}"#),
            &plan,
            &reference,
            "api_key",
        )
        .unwrap();
        assert_eq!(value.expose(), b"sk-1");
    }

    #[test]
    fn missing_field_lists_names_only() {
        let (plan, reference) = planned("aws-sm:x#nope");
        let err = json_field(
            &fetched(r#"{"api_key":"sk-hidden","org":"o-hidden"}"#),
            &plan,
            &reference,
            "nope",
        )
        .unwrap_err();
        assert_eq!(err.kind, ErrorKind::NotFound);
        assert!(err.message.contains("api_key, org"), "{}", err.message);
        assert!(!err.message.contains("hidden"), "{}", err.message);
    }

    #[test]
    fn field_of_non_object_is_rejected() {
        let (plan, reference) = planned("aws-sm:x#k");
        for (value, shape) in [
            ("[1,2]", "JSON array"),
            ("sk-plain", "not valid JSON"),
            ("\"s\"", "JSON string"),
        ] {
            let err = json_field(&fetched(value), &plan, &reference, "k").unwrap_err();
            assert_eq!(err.kind, ErrorKind::Invalid);
            assert!(err.message.contains(shape), "{}", err.message);
            assert!(!err.message.contains("sk-plain"), "{}", err.message);
        }
    }

    #[test]
    fn nested_field_is_rejected() {
        let (plan, reference) = planned("aws-sm:x#k");
        let err = json_field(&fetched(r#"{"k":{"a":1}}"#), &plan, &reference, "k").unwrap_err();
        assert!(err.message.contains("JSON object, not a string"));
    }
}
