//! Logging to stderr through `tracing`: warnings by default, the steps of a
//! run with `-v`, errors only with `-q`, or any filter in `KEYRUN_LOG`.

use std::fmt;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

use crate::cli::LogArgs;

/// Lines as `keyrun: warning: ...`, so they read like the rest of keyrun's
/// messages and stand apart from the wrapped command's output.
struct KeyrunFormat;

impl<S, N> FormatEvent<S, N> for KeyrunFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let level = match *event.metadata().level() {
            Level::ERROR => "error",
            Level::WARN => "warning",
            Level::INFO => "info",
            Level::DEBUG => "debug",
            Level::TRACE => "trace",
        };
        write!(writer, "keyrun: {level}: ")?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// Stderr for log lines, with write errors ignored: a closed or broken
/// stderr must not stop keyrun, which still has a child to run and wait for.
struct Stderr;

impl std::io::Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = std::io::stderr().write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stderr().flush();
        Ok(())
    }
}

pub fn init(args: &LogArgs) {
    let default = match (args.quiet, args.verbose) {
        (true, _) => "keyrun=error",
        (false, 0) => "keyrun=warn",
        (false, 1) => "keyrun=debug",
        (false, _) => "keyrun=trace,debug",
    };
    let filter = std::env::var("KEYRUN_LOG")
        .ok()
        .filter(|text| !text.is_empty())
        .and_then(|text| EnvFilter::try_new(text).ok())
        .unwrap_or_else(|| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| Stderr)
        // The fallback report of a failed write would go to stderr too, and
        // `eprintln!` panics when it fails.
        .log_internal_errors(false)
        .with_ansi(false)
        .event_format(KeyrunFormat)
        .try_init();
}
