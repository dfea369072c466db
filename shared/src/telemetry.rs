//! Log set-up: JSON lines in Lambda (CloudWatch), readable lines for
//! `pharmagate dev`, and the span every request runs in, so each line names
//! the gateway's and the Lambda's request ids.
//!
//! The level comes from `RUST_LOG`, else from `AWS_LAMBDA_LOG_LEVEL` (what
//! Lambda's logging controls set), else `info`. Whatever the level, TRACE
//! events of every crate but our own are dropped: `lambda_runtime` logs the
//! raw invocation event at TRACE (`x-api-key`, `Authorization`, request
//! bodies with client secrets and manufacturing records), and the AWS SDK
//! logs whole requests at TRACE (a `PutSecretValue` body is a new private
//! key). Our crates log nothing secret at any level; theirs we cannot vouch
//! for, so TRACE of a dependency never reaches a line.

use tracing::Subscriber;
use tracing::metadata::Metadata;
use tracing_subscriber::filter::{EnvFilter, FilterExt, filter_fn};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

/// The level directives in force: `RUST_LOG`, `AWS_LAMBDA_LOG_LEVEL`, `info`.
fn directives() -> String {
    let from = |name| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    from("RUST_LOG")
        .or_else(|| from("AWS_LAMBDA_LOG_LEVEL").map(|v| v.to_lowercase()))
        .unwrap_or_else(|| "info".into())
}

/// Whether an event may be written at all, whatever the level asked for.
fn never_secret_bearing(meta: &Metadata<'_>) -> bool {
    *meta.level() != tracing::Level::TRACE || meta.target().starts_with("pharmagate")
}

fn filter<S>(directives: &str) -> impl tracing_subscriber::layer::Filter<S> + use<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let env = EnvFilter::try_new(directives).unwrap_or_else(|_| EnvFilter::new("info"));
    env.and(filter_fn(never_secret_bearing))
}

/// The JSON subscriber Lambda functions log with, writing to `writer`.
fn json_subscriber<W>(directives: &str, writer: W) -> impl Subscriber + Send + Sync + use<W>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let layer = tracing_subscriber::fmt::layer()
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(false)
        .with_target(false)
        .without_time()
        .with_writer(writer)
        .with_filter(filter(directives));
    Registry::default().with(layer)
}

/// JSON logs for Lambda; safe to call more than once.
pub fn init_json() {
    let _ = json_subscriber(&directives(), std::io::stdout).try_init();
}

/// Human-readable logs on stderr for the local gateway and the CLI.
pub fn init_pretty() {
    use std::io::IsTerminal;
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .with_filter(filter(&directives()));
    let _ = Registry::default().with(layer).try_init();
}

/// The span a request runs in: every line logged inside it carries both ids.
/// It is an ERROR-level span so that it is enabled whenever error lines are,
/// whatever the configured level.
pub fn request_span(request_id: Option<&str>, lambda_request_id: &str) -> tracing::Span {
    tracing::error_span!(
        "request",
        request_id = request_id.unwrap_or("-"),
        lambda_request_id = lambda_request_id
    )
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    fn lines_logged(directives: &str, emit: impl FnOnce()) -> Vec<serde_json::Value> {
        let buffer = Buffer::default();
        tracing::subscriber::with_default(json_subscriber(directives, buffer.clone()), emit);
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        text.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect()
    }

    #[test]
    fn every_line_in_a_request_names_both_request_ids() {
        let lines = lines_logged("info", || {
            let _entered = request_span(Some("gw-1"), "lambda-1").entered();
            tracing::info!(function = "catalog", route = "GET /v1/products/{cas}", status = 200, "request");
            tracing::warn!("something odd");
        });
        assert_eq!(lines.len(), 2);
        for line in &lines {
            assert_eq!(line["span"]["request_id"], "gw-1", "{line}");
            assert_eq!(line["span"]["lambda_request_id"], "lambda-1", "{line}");
        }
        assert_eq!(lines[0]["status"], 200);
        assert_eq!(lines[0]["message"], "request");
        assert_eq!(lines[1]["level"], "WARN");
    }

    #[test]
    fn the_ids_survive_a_level_that_hides_info() {
        let lines = lines_logged("error", || {
            let _entered = request_span(Some("gw-2"), "lambda-2").entered();
            tracing::info!("hidden");
            tracing::error!("shown");
        });
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0]["span"]["request_id"], "gw-2");
    }

    #[test]
    fn dependency_trace_events_never_reach_a_line_even_at_trace() {
        let lines = lines_logged("trace", || {
            tracing::trace!(
                target: "lambda_runtime::layers::api_response",
                body = "{\"headers\":{\"x-api-key\":\"pg_dev_secret\"}}",
                "raw JSON event received from Lambda"
            );
            tracing::trace!(
                target: "aws_smithy_runtime::client::orchestrator",
                request = "PutSecretValue {\"SecretString\":\"private-jwk-d\"}",
                "transmitting request"
            );
            tracing::trace!(target: "hyper_util::client", "trace of another crate");
            tracing::debug!(target: "lambda_runtime::runtime", "kept");
            tracing::trace!(target: "pharmagate_shared::rotation", "also kept");
        });
        let text: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        let messages: Vec<&str> = lines.iter().map(|l| l["message"].as_str().unwrap()).collect();
        assert_eq!(messages, ["kept", "also kept"], "{text:?}");
        assert!(text.iter().all(|l| !l.contains("pg_dev_secret") && !l.contains("private-jwk-d")));
    }
}
