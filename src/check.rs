//! `keyrun check`: resolves the variables a run would inject and reports,
//! per variable, its source, reference, version, age, fingerprint and
//! format, then what the child would not receive, whether masking would
//! apply and, with `--online`, whether the API accepts the key. It never
//! prints a value. The exit status suits a CI preflight step: 0 when every
//! check passes, 1 when one fails, 125 for keyrun's own errors.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::io::IsTerminal as _;
use std::time::Duration;

use anyhow::{Context as _, Result};
use reqwest::header::{HeaderValue, AUTHORIZATION};
use serde::Serialize;
use zeroize::Zeroizing;

use crate::audit::age::{self, Status};
use crate::audit::{self, Auditor};
use crate::cli::{ApiStyle, AuditArgs, CheckArgs, MaskMode, ResolveArgs};
use crate::config::{Config, Profile};
use crate::run::{self, Exit, Injected, Planned};
use crate::secret::{self, Secret};
use crate::source::{http, Runtime};

/// The total time of the `--online` request.
const ONLINE_TIMEOUT: Duration = Duration::from_secs(10);

/// The base URL `--online` uses when neither the injected variables nor
/// keyrun's environment set OPENAI_BASE_URL.
const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";

/// The Azure OpenAI data-plane API version `--online` sends when
/// OPENAI_API_VERSION is not set.
const DEFAULT_AZURE_API_VERSION: &str = "2024-10-21";

/// The findings of `keyrun check` on one variable.
#[derive(Debug, Serialize)]
pub struct VariableCheck {
    pub var: String,
    /// The place the reference was written, for messages.
    pub origin: String,
    pub source: String,
    pub reference: Option<String>,
    pub version: Option<String>,
    pub created: Option<String>,
    pub age_days: Option<u64>,
    pub max_age: Option<String>,
    pub enforce_max_age: bool,
    /// `ok`, `overdue`, `unknown` (the source reports no creation time) or
    /// `no_limit`.
    pub age: &'static str,
    pub age_note: Option<String>,
    pub fingerprint: Option<String>,
    /// `openai`, `other` or `not_checked`.
    pub format: &'static str,
    pub error: Option<String>,
    pub passed: bool,
}

/// Whether masking would hide the values in the child's output.
#[derive(Debug, Serialize)]
pub struct Masking {
    pub mode: &'static str,
    pub applies: bool,
    pub reason: &'static str,
}

/// A variable of keyrun's environment that the child would not receive.
#[derive(Debug, Serialize)]
pub struct Withheld {
    pub name: String,
    pub reason: String,
}

/// The result of `--online`.
#[derive(Debug, Serialize)]
pub struct Online {
    pub url: String,
    /// `openai` (Authorization: Bearer) or `azure` (api-key).
    pub style: &'static str,
    /// `accepted`, `rejected`, `rate_limited`, `out_of_quota`,
    /// `unexpected`, `unreachable` or `no_key`.
    pub verdict: &'static str,
    pub status: Option<u16>,
    /// The API's error code, such as `invalid_api_key`.
    pub code: Option<String>,
    pub detail: String,
    pub passed: bool,
}

#[derive(Debug, Serialize)]
pub struct CheckReport {
    pub profile: Option<String>,
    pub variables: Vec<VariableCheck>,
    pub masking: Masking,
    pub clean_env: bool,
    pub withheld: Vec<Withheld>,
    pub online: Option<Online>,
    pub passed: bool,
}

/// Runs `keyrun check`.
pub fn check(args: &ResolveArgs, check_args: &CheckArgs) -> Result<Exit> {
    let config = Config::discover(args.config.as_deref())?;
    let profile = run::choose_profile(args, &config)?;
    let planned = run::plan(args, &config, profile)?;
    run::check_unset(&planned, profile, &[])?;
    let command = [OsString::from("keyrun check")];
    let audit_args = AuditArgs {
        reason: std::env::var("KEYRUN_REASON").ok(),
    };
    let mut audit = Auditor::open_for_run(&config, args, &audit_args, &command)?;

    // Each variable is resolved on its own, so that one failure does not
    // hide the state of the others.
    let mut runtime = Runtime::default();
    let mut variables = Vec::new();
    let mut injected: Vec<Injected> = Vec::new();
    for item in &planned {
        match run::resolve_all(std::slice::from_ref(item), &config, profile, &mut runtime) {
            Ok(resolved) => {
                for variable in resolved {
                    variables.push(variable_check(item, &variable, &config, profile)?);
                    injected.push(variable);
                }
            }
            Err(err) => variables.push(failed_check(item, &err)),
        }
    }
    runtime.shutdown();
    audit.resolved(&injected)?;

    let online = match check_args.online {
        true => Some(online_check(&injected, check_args, profile)?),
        false => None,
    };
    let report = CheckReport {
        profile: profile.map(|(name, _)| name.to_string()),
        passed: variables.iter().all(|v| v.passed) && online.as_ref().is_none_or(|o| o.passed),
        variables,
        masking: masking_verdict(profile.and_then(|(_, p)| p.mask).unwrap_or_default()),
        clean_env: profile.and_then(|(_, p)| p.clean_env).unwrap_or(false),
        withheld: withheld(&injected, &config, profile),
        online,
    };
    drop(injected);

    let text = match check_args.json {
        true => {
            let mut text =
                serde_json::to_string_pretty(&report).context("cannot encode the report")?;
            text.push('\n');
            text
        }
        false => render(&report),
    };
    run::write_stdout(text.as_bytes()).context("cannot write the report")?;
    Ok(Exit::Code(if report.passed { 0 } else { 1 }))
}

fn variable_check(
    item: &Planned,
    injected: &Injected,
    config: &Config,
    profile: Option<(&str, &Profile)>,
) -> Result<VariableCheck> {
    let policy = age::policy(config, profile, &injected.var)?;
    let resolved = &injected.resolved;
    let status = age::status(resolved.created, &policy);
    let (age_word, age_note, age_passed) = match (&status, &policy.limit) {
        (Status::Unknown, _) => (
            "unknown",
            Some(format!(
                "the {} source reports no creation time, so max_age cannot apply",
                injected.scheme
            )),
            true,
        ),
        (Status::Overdue { .. }, _) => (
            "overdue",
            Some(age::overdue_message(injected, &policy)),
            !policy.enforce,
        ),
        (Status::Fine { .. }, Some(_)) => ("ok", None, true),
        (Status::Fine { .. }, None) => ("no_limit", None, true),
    };
    let format = match injected.var.as_str() {
        "OPENAI_API_KEY" => match secret::looks_like_openai_key(&resolved.value) {
            true => "openai",
            false => "other",
        },
        _ => "not_checked",
    };
    Ok(VariableCheck {
        var: injected.var.clone(),
        origin: item.origin.clone(),
        source: injected.scheme.clone(),
        reference: Some(injected.display.clone()),
        version: resolved.version.clone(),
        created: resolved
            .created
            .map(|t| audit::format_time(time::OffsetDateTime::from(t))),
        age_days: resolved.created.and_then(age::age_days),
        max_age: policy.limit.as_ref().map(|l| l.text.clone()),
        enforce_max_age: policy.enforce,
        age: age_word,
        age_note,
        fingerprint: Some(resolved.value.fingerprint()),
        format,
        error: None,
        passed: age_passed,
    })
}

fn failed_check(item: &Planned, err: &anyhow::Error) -> VariableCheck {
    VariableCheck {
        var: item.request.var.clone(),
        origin: item.origin.clone(),
        source: item.request.reference.scheme.clone(),
        reference: None,
        version: None,
        created: None,
        age_days: None,
        max_age: None,
        enforce_max_age: false,
        age: "unknown",
        age_note: None,
        fingerprint: None,
        format: "not_checked",
        error: Some(format!("{err:#}")),
        passed: false,
    }
}

/// Tells whether masking would apply to a run started from here with the
/// profile's `mask` mode.
pub fn masking_verdict(mode: MaskMode) -> Masking {
    let stdout = std::io::stdout().is_terminal();
    let stderr = std::io::stderr().is_terminal();
    let (applies, reason) = match (mode, stdout, stderr) {
        (MaskMode::Never, _, _) => (false, "masking is turned off"),
        (MaskMode::Always, true, _) | (MaskMode::Always, _, true) => (
            true,
            "the command runs on a pseudo-terminal whose output is masked",
        ),
        (_, true, true) => (false, "stdout and stderr are terminals"),
        (_, false, true) => (true, "stdout is not a terminal"),
        (_, true, false) => (true, "stderr is not a terminal"),
        (_, false, false) => (true, "stdout and stderr are not terminals"),
    };
    let mode = match mode {
        MaskMode::Auto => "auto",
        MaskMode::Always => "always",
        MaskMode::Never => "never",
    };
    Masking {
        mode,
        applies,
        reason,
    }
}

/// Lists the variables of keyrun's environment the child would not get:
/// the sources' own credentials, a variable that held a value under
/// another name, and the profile's `unset`.
fn withheld(
    injected: &[Injected],
    config: &Config,
    profile: Option<(&str, &Profile)>,
) -> Vec<Withheld> {
    let profile = profile.map(|(_, p)| p);
    let keep_backend_env = profile
        .and_then(|p| p.keep_backend_env)
        .or(config.file.keep_backend_env)
        .unwrap_or(false);
    let names: Vec<&str> = injected.iter().map(|i| i.var.as_str()).collect();
    let mut withheld: Vec<Withheld> = Vec::new();
    let mut add = |name: &str, reason: String| {
        if !withheld.iter().any(|w| w.name == name) {
            withheld.push(Withheld {
                name: name.to_string(),
                reason,
            });
        }
    };

    for item in injected {
        if !keep_backend_env {
            for name in &item.resolved.credential_env {
                add(name, format!("a credential of the {} source", item.scheme));
            }
        }
        if let Some(name) = &item.resolved.value_env {
            if !names.contains(&name.as_str()) {
                add(name, format!("it holds the value of {}", item.var));
            }
        }
    }
    for name in profile.map(|p| p.unset.as_slice()).unwrap_or_default() {
        add(name, "unset in the profile".to_string());
    }
    withheld
}

/// Looks up the value of an injected variable.
fn injected_value<'i>(injected: &'i [Injected], name: &str) -> Option<&'i Secret> {
    injected
        .iter()
        .find(|i| i.var == name)
        .map(|i| &i.resolved.value)
}

/// Reads a setting such as a URL from an injected variable, else from
/// keyrun's own environment. Never used for a key.
fn setting(injected: &[Injected], name: &str) -> Option<String> {
    match injected_value(injected, name) {
        Some(value) => Some(String::from_utf8_lossy(value.expose()).into_owned()),
        None => std::env::var(name).ok().filter(|v| !v.is_empty()),
    }
}

/// Sends `GET {base}/models` with the key and classifies the response.
fn online_check(
    injected: &[Injected],
    check_args: &CheckArgs,
    profile: Option<(&str, &Profile)>,
) -> Result<Online> {
    let profile_style =
        profile
            .and_then(|(_, p)| p.api_style.as_deref())
            .map(|style| match style {
                "azure" => ApiStyle::Azure,
                _ => ApiStyle::Openai,
            });
    let mut base = setting(injected, "OPENAI_BASE_URL");
    let explicit_style = check_args.api_style.or(profile_style);
    if base.is_none() && explicit_style == Some(ApiStyle::Azure) {
        base = setting(injected, "AZURE_OPENAI_ENDPOINT");
    }
    let base = base.unwrap_or_else(|| DEFAULT_BASE_URL.to_string());
    // The value is not quoted: a variable set from the wrong reference may
    // hold a key.
    let parsed = reqwest::Url::parse(&base).context(
        "OPENAI_BASE_URL is not a URL (its value is not shown); write it as https://HOST/v1",
    )?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        anyhow::bail!(
            "OPENAI_BASE_URL contains a user name or password (not shown); remove it, since \
             the check sends the key in a header"
        );
    }
    let style = explicit_style.unwrap_or_else(|| {
        match parsed
            .host_str()
            .is_some_and(|h| h.ends_with(".openai.azure.com"))
        {
            true => ApiStyle::Azure,
            false => ApiStyle::Openai,
        }
    });

    let mut url = base.trim_end_matches('/').to_string();
    if style == ApiStyle::Azure && matches!(parsed.path(), "" | "/") {
        url.push_str("/openai");
    }
    url.push_str("/models");
    let style_name = match style {
        ApiStyle::Azure => "azure",
        ApiStyle::Openai => "openai",
    };

    let key = injected_value(injected, "OPENAI_API_KEY")
        .or_else(|| injected_value(injected, "AZURE_OPENAI_API_KEY"));
    let Some(key) = key else {
        return Ok(Online {
            url,
            style: style_name,
            verdict: "no_key",
            status: None,
            code: None,
            detail: "no OPENAI_API_KEY (or AZURE_OPENAI_API_KEY) was resolved, so there is no key to send".to_string(),
            passed: false,
        });
    };

    let api_version = setting(injected, "OPENAI_API_VERSION")
        .unwrap_or_else(|| DEFAULT_AZURE_API_VERSION.to_string());
    let header = key_header(key, style)?;
    tracing::debug!(url = %url, style = style_name, "sending the online check");

    // The client trusts the CAs of SSL_CERT_FILE and SSL_CERT_DIR as the
    // azure-kv: source does, for a TLS-inspecting proxy or a private gateway.
    let extra_roots = http::load_ssl_cert_env("check --online")?;
    let mut runtime = Runtime::default();
    let answer = {
        let client = crate::source::http::client_builder()
            .user_agent(concat!("keyrun/", env!("CARGO_PKG_VERSION")))
            .timeout(ONLINE_TIMEOUT)
            // A redirect would carry the key to another host.
            .redirect(reqwest::redirect::Policy::none())
            .tls_certs_merge(extra_roots)
            .build()
            .context("cannot set up the HTTPS client for --online")?;
        let mut request = client.get(&url);
        request = match style {
            ApiStyle::Azure => request
                .header("api-key", header)
                .query(&[("api-version", api_version.as_str())]),
            ApiStyle::Openai => request.header(AUTHORIZATION, header),
        };
        let runtime = runtime.get().map_err(anyhow::Error::new)?;
        runtime.block_on(async move {
            let mut response = request.send().await?;
            let status = response.status().as_u16();
            // Only the error code near the start of the body matters, and
            // a hostile server may send no end.
            let mut body = Zeroizing::new(Vec::new());
            while let Ok(Some(chunk)) = response.chunk().await {
                let room = MAX_ERROR_BODY_BYTES - body.len();
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                if body.len() == MAX_ERROR_BODY_BYTES {
                    break;
                }
            }
            Ok::<_, reqwest::Error>((status, error_code(&body)))
        })
    };
    runtime.shutdown();

    Ok(classify(url, style_name, answer))
}

/// The most of an `--online` response body that keyrun reads for its
/// error code.
const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;

/// Builds the `Authorization: Bearer KEY` or `api-key: KEY` header value,
/// marked sensitive so no debug output shows it.
fn key_header(key: &Secret, style: ApiStyle) -> Result<HeaderValue> {
    let mut text = Zeroizing::new(Vec::with_capacity(7 + key.len()));
    if style == ApiStyle::Openai {
        text.extend_from_slice(b"Bearer ");
    }
    text.extend_from_slice(key.expose());
    let mut value = HeaderValue::from_bytes(&text)
        .map_err(|_| anyhow::anyhow!("the key contains bytes an HTTP header cannot carry"))?;
    value.set_sensitive(true);
    Ok(value)
}

/// Reads `error.code` (else `error.type`) from an OpenAI-style error body.
fn error_code(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let error = value.get("error")?;
    error
        .get("code")
        .and_then(|c| c.as_str())
        .or_else(|| error.get("type").and_then(|t| t.as_str()))
        .map(str::to_string)
}

fn classify(
    url: String,
    style: &'static str,
    answer: Result<(u16, Option<String>), reqwest::Error>,
) -> Online {
    let (status, code) = match answer {
        Ok(answer) => answer,
        Err(err) => {
            let detail = match http::certificate_rejection(&err) {
                Some(reason) => format!(
                    "the server's TLS certificate was rejected ({reason}); if a private CA or a \
                     TLS-inspecting proxy signs it, point SSL_CERT_FILE at that CA's PEM file \
                     (or SSL_CERT_DIR at a folder of them)"
                ),
                None => {
                    let cause = match err.is_timeout() {
                        true => format!("no answer within {} s", ONLINE_TIMEOUT.as_secs()),
                        false => describe_transport_error(&err),
                    };
                    format!("{cause}; check the URL (OPENAI_BASE_URL), the network and any proxy (HTTPS_PROXY)")
                }
            };
            return Online {
                url,
                style,
                verdict: "unreachable",
                status: None,
                code: None,
                detail,
                passed: false,
            };
        }
    };
    let (verdict, detail, passed) = match status {
        200 => ("accepted", "the API accepted the key".to_string(), true),
        401 | 403 => (
            "rejected",
            "the API rejected the key; check that it is current and belongs to this endpoint, or create a new one".to_string(),
            false,
        ),
        429 if code.as_deref() == Some("insufficient_quota") => (
            "out_of_quota",
            "the key is valid but its account is out of quota; check the plan and billing".to_string(),
            false,
        ),
        429 => (
            "rate_limited",
            "the key is valid but rate limited now; retry later or lower the request rate".to_string(),
            false,
        ),
        other => (
            "unexpected",
            format!("the API answered with status {other}"),
            false,
        ),
    };
    Online {
        url,
        style,
        verdict,
        status: Some(status),
        code,
        detail,
        passed,
    }
}

/// Finds the innermost cause of a transport error, such as "Connection
/// refused".
fn describe_transport_error(err: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = err;
    while let Some(next) = cause.source() {
        cause = next;
    }
    format!("the request failed: {cause}")
}

/// Renders the report as text for a terminal.
fn render(report: &CheckReport) -> String {
    let mut text = String::new();
    let _ = writeln!(
        text,
        "profile: {}",
        report.profile.as_deref().unwrap_or("none")
    );
    for v in &report.variables {
        let _ = writeln!(text);
        let _ = writeln!(text, "{} (from {})", v.var, v.origin);
        if let Some(error) = &v.error {
            let _ = writeln!(text, "  FAILED       {error}");
            continue;
        }
        let _ = writeln!(text, "  source       {}", v.source);
        let _ = writeln!(
            text,
            "  reference    {}",
            v.reference.as_deref().unwrap_or("-")
        );
        let _ = writeln!(
            text,
            "  version      {}",
            v.version.as_deref().unwrap_or("-")
        );
        let _ = writeln!(text, "  age          {}", describe_age(v));
        let _ = writeln!(
            text,
            "  fingerprint  {}",
            v.fingerprint.as_deref().unwrap_or("-")
        );
        let format = match v.format {
            "openai" => "looks like an OpenAI key",
            "other" => "does not look like an OpenAI key (expected for Azure OpenAI or a gateway)",
            _ => "not checked",
        };
        let _ = writeln!(text, "  format       {format}");
        if let Some(note) = &v.age_note {
            let mark = if v.passed { "note" } else { "FAILED" };
            let _ = writeln!(text, "  {mark:<12} {note}");
        }
    }

    let _ = writeln!(text);
    let _ = writeln!(
        text,
        "masking: {} ({}: {})",
        if report.masking.applies { "on" } else { "off" },
        report.masking.mode,
        report.masking.reason
    );
    if report.clean_env {
        let _ = writeln!(
            text,
            "clean_env: the child gets only PATH, HOME, USER, LOGNAME, SHELL, LANG, LC_*, TERM, TZ, TMPDIR and the injected variables"
        );
    }
    if report.withheld.is_empty() {
        let _ = writeln!(text, "withheld from the child: none");
    } else {
        let _ = writeln!(text, "withheld from the child:");
        for w in &report.withheld {
            let _ = writeln!(text, "  {} ({})", w.name, w.reason);
        }
    }
    if let Some(online) = &report.online {
        let status = online
            .status
            .map(|s| {
                format!(
                    " ({s}{})",
                    online
                        .code
                        .as_deref()
                        .map(|c| format!(", {c}"))
                        .unwrap_or_default()
                )
            })
            .unwrap_or_default();
        let _ = writeln!(
            text,
            "online: {}{status}: GET {} [{} style]: {}",
            online.verdict, online.url, online.style, online.detail
        );
    }
    let failed = report.variables.iter().filter(|v| !v.passed).count()
        + usize::from(report.online.as_ref().is_some_and(|o| !o.passed));
    let _ = match failed {
        0 => writeln!(text, "result: every check passed"),
        n => writeln!(text, "result: {n} checks failed"),
    };
    text
}

fn describe_age(v: &VariableCheck) -> String {
    let days = match v.age_days {
        Some(days) => format!("{days} days"),
        None => return "unknown".to_string(),
    };
    match (&v.max_age, v.age) {
        (Some(limit), "overdue") => format!("{days}, over max_age {limit}"),
        (Some(limit), _) => format!("{days}, within max_age {limit}"),
        (None, _) => format!("{days}, no max_age set"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_and_rate_limit_differ() {
        let quota = classify(
            "u".into(),
            "openai",
            Ok((429, Some("insufficient_quota".into()))),
        );
        assert_eq!(quota.verdict, "out_of_quota");
        let rate = classify(
            "u".into(),
            "openai",
            Ok((429, Some("rate_limit_exceeded".into()))),
        );
        assert_eq!(rate.verdict, "rate_limited");
        assert!(!rate.passed);
    }

    #[test]
    fn error_code_read_from_body() {
        let body =
            br#"{"error":{"message":"x","type":"insufficient_quota","code":"insufficient_quota"}}"#;
        assert_eq!(error_code(body).as_deref(), Some("insufficient_quota"));
        assert_eq!(error_code(b"not json"), None);
    }
}
