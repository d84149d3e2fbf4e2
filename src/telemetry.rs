//! Logs, traces and the per-RPC span and metrics.
//!
//! - Logs: text or JSON lines to stderr, filtered by `LATCHKEY_LOG`; every
//!   line logged during an RPC carries its trace id. Codes, tokens, keys and
//!   secrets are never logged (the dev mailbox's development-only code line
//!   is the one, clearly marked, exception).
//! - Traces: exported over OTLP/gRPC only when `OTEL_EXPORTER_OTLP_ENDPOINT`
//!   (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, with the standard
//!   `OTEL_SERVICE_NAME` / `OTEL_RESOURCE_ATTRIBUTES`. A W3C `traceparent`
//!   on an incoming call (gRPC metadata or HTTP header) becomes the parent.
//! - [`RpcLayer`]: one span per RPC on both transports, and the RPC metrics.

use std::{
    future::Future,
    pin::Pin,
    sync::OnceLock,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::{Resource, propagation::TraceContextPropagator, trace::SdkTracerProvider};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{EnvFilter, fmt, prelude::*, registry::LookupSpan};

use crate::config::LogFormat;

/// What must be flushed before the process exits.
#[derive(Default)]
pub struct Telemetry {
    tracer_provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether traces are exported.
    pub fn exports_traces(&self) -> bool {
        self.tracer_provider.is_some()
    }

    /// Sends the spans still buffered, waiting at most `timeout` (a dead
    /// collector must not hold up the exit).
    pub async fn shutdown(self, timeout: Duration) {
        let Some(provider) = self.tracer_provider else {
            return;
        };
        let flushed = tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(timeout));
        match tokio::time::timeout(timeout + Duration::from_millis(500), flushed).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "flushing traces failed"),
            _ => tracing::warn!("flushing traces timed out"),
        }
    }
}

/// The OTLP endpoint, if traces are to be exported.
fn otlp_endpoint() -> Option<String> {
    [
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ]
    .iter()
    .filter_map(|name| std::env::var(name).ok())
    .find(|v| !v.trim().is_empty())
}

/// `filter` with webauthn-rs's own logging off, unless it names it:
/// webauthn-rs logs malformed passkey data at ERROR, and anyone can send
/// that. The passkey flows log each refusal at info themselves.
fn quiet_webauthn(filter: &str) -> String {
    if filter.contains("webauthn") {
        filter.to_owned()
    } else {
        format!("{filter},webauthn_rs_core=off,webauthn_rs=off")
    }
}

/// Installs the global subscriber (and, when configured, the OTLP trace
/// exporter). Safe to call more than once (later calls change nothing), so
/// tests may call it freely. Must run inside the Tokio runtime.
pub fn init(filter: &str, format: LogFormat) -> Telemetry {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let filter = EnvFilter::try_new(quiet_webauthn(filter))
        .unwrap_or_else(|_| EnvFilter::new(quiet_webauthn("info")));
    let provider = otlp_endpoint().and_then(|_| match tracer_provider() {
        Ok(p) => Some(p),
        Err(e) => {
            eprintln!("warning: OpenTelemetry export is off: {e:#}");
            None
        }
    });
    // Spans are exported at info and above whatever the log filter says
    // (LATCHKEY_LOG=warn must not switch tracing off).
    let otel = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("latchkey"))
            .with_error_records_to_exceptions(true)
            .with_filter(
                tracing_subscriber::filter::Targets::new()
                    .with_default(tracing::Level::INFO)
                    .with_target(
                        crate::mail::transport::DEV_MAILBOX_TARGET,
                        tracing_subscriber::filter::LevelFilter::OFF,
                    ),
            )
    });
    let registry = tracing_subscriber::registry().with(otel);
    let installed = match format {
        LogFormat::Text => registry
            .with(
                fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_filter(filter),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .event_format(JsonLines)
                    .fmt_fields(fmt::format::JsonFields::new())
                    .with_writer(std::io::stderr)
                    .with_filter(filter),
            )
            .try_init(),
    };
    match (installed, provider) {
        (Ok(()), Some(p)) => Telemetry {
            tracer_provider: Some(p),
        },
        (_, Some(p)) => {
            let _ = p.shutdown();
            Telemetry::default()
        }
        _ => Telemetry::default(),
    }
}

fn tracer_provider() -> anyhow::Result<SdkTracerProvider> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()?;
    // OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES are read here; without
    // a service name the service is "latchkey", not "unknown_service".
    let mut resource = Resource::builder().build();
    let named = resource
        .get(&opentelemetry::Key::new("service.name"))
        .is_some_and(|v| !v.as_str().starts_with("unknown_service"));
    if !named {
        resource = Resource::builder().with_service_name("latchkey").build();
    }
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

/// JSON log lines: `timestamp`, `level`, `target`, the trace id of the RPC
/// (when there is one) as a top-level `trace_id`, `fields` (the event's
/// message and fields with those of the spans it happened in) and `spans`
/// (their names, outermost first).
struct JsonLines;

impl<S, N> fmt::FormatEvent<S, N> for JsonLines
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &fmt::FmtContext<'_, S, N>,
        mut writer: fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let mut line = serde_json::Map::new();
        let now = time::OffsetDateTime::now_utc();
        let timestamp = now
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        line.insert("timestamp".into(), timestamp.into());
        line.insert("level".into(), event.metadata().level().as_str().into());
        line.insert("target".into(), event.metadata().target().into());
        let mut fields = JsonVisitor(serde_json::Map::new());
        event.record(&mut fields);
        let mut spans = Vec::new();
        let mut trace_id = None;
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                spans.push(serde_json::Value::from(span.name()));
                let extensions = span.extensions();
                let Some(formatted) = extensions.get::<fmt::FormattedFields<N>>() else {
                    continue;
                };
                // The span's fields, as the JSON field formatter wrote them.
                if let Ok(serde_json::Value::Object(span_fields)) =
                    serde_json::from_str::<serde_json::Value>(formatted.as_str())
                {
                    if let Some(id) = span_fields.get("trace_id") {
                        trace_id = Some(id.clone());
                    }
                    for (k, v) in span_fields {
                        if k != "trace_id" && !k.starts_with("otel.") {
                            fields.0.entry(k).or_insert(v);
                        }
                    }
                }
            }
        }
        if let Some(id) = trace_id {
            line.insert("trace_id".into(), id);
        }
        line.insert("fields".into(), fields.0.into());
        if !spans.is_empty() {
            line.insert("spans".into(), spans.into());
        }
        let text = serde_json::to_string(&line).map_err(|_| std::fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

struct JsonVisitor(serde_json::Map<String, serde_json::Value>);

impl tracing::field::Visit for JsonVisitor {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().to_owned(), format!("{value:?}").into());
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
}

/// The machine code of an answer, put on the response by the transport
/// (an HTTP response extension, or the gRPC header [`CODE_HEADER`], which
/// [`RpcLayer`] removes before the answer leaves).
#[derive(Clone, Copy, Debug)]
pub struct ResultCode(pub &'static str);

/// The header a gRPC error carries its machine code in, inside the server.
pub const CODE_HEADER: &str = "latchkey-code";

/// Names a call for its span and metrics: `(span name, method label)`, from
/// the request path. Unknown paths must map to a fixed label.
pub type Namer = fn(&str) -> (&'static str, &'static str);

/// A span per RPC (parented by an incoming `traceparent`, carrying the
/// method, the trace id, the caller's tenant and the result) and the RPC
/// count and latency metrics.
#[derive(Clone, Copy)]
pub struct RpcLayer {
    transport: &'static str,
    namer: Namer,
}

impl RpcLayer {
    pub fn new(transport: &'static str, namer: Namer) -> Self {
        Self { transport, namer }
    }
}

impl<S> tower::Layer<S> for RpcLayer {
    type Service = RpcService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RpcService {
            inner,
            layer: *self,
        }
    }
}

#[derive(Clone)]
pub struct RpcService<S> {
    inner: S,
    layer: RpcLayer,
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl opentelemetry::propagation::Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// The span of a call, with its parent from the request's headers.
fn rpc_span(
    transport: &'static str,
    name: &'static str,
    method: &'static str,
    headers: &http::HeaderMap,
) -> tracing::Span {
    // At ERROR level although it is no error: a span's level only decides
    // whether it is kept, and the log lines of a call must carry its trace
    // id whatever LATCHKEY_LOG lets through.
    let span = tracing::error_span!(
        "rpc",
        otel.name = name,
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        rpc.system = transport,
        rpc.method = method,
        trace_id = tracing::field::Empty,
        tenant = tracing::field::Empty,
        code = tracing::field::Empty,
    );
    if span.is_disabled() {
        return span;
    }
    let parent =
        opentelemetry::global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(headers)));
    let remote = parent.span().span_context().clone();
    let _ = span.set_parent(parent);
    // The exported span's trace id; without an exporter, the caller's; else
    // a fresh one, so log lines of one call can still be grouped.
    let own = span.context().span().span_context().clone();
    let trace_id = if own.is_valid() {
        own.trace_id().to_string()
    } else if remote.is_valid() {
        remote.trace_id().to_string()
    } else {
        let mut bytes = [0u8; 16];
        rand::fill(&mut bytes);
        opentelemetry::trace::TraceId::from_bytes(bytes).to_string()
    };
    span.record("trace_id", trace_id.as_str());
    span
}

impl<S, B, R> tower::Service<http::Request<B>> for RpcService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    S::Error: 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let started = Instant::now();
        let transport = self.layer.transport;
        let (name, method) = (self.layer.namer)(request.uri().path());
        let span = rpc_span(transport, name, method, request.headers());
        // The synchronous part of the call (the API key check) runs in the
        // span too, so it can name the tenant.
        let future = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        let record = span.clone();
        Box::pin(
            async move {
                let result = future.await;
                let code = match &result {
                    Ok(response) => result_code(response),
                    Err(_) => "INTERNAL",
                };
                record.record("code", code);
                if matches!(code, "INTERNAL" | "UNAVAILABLE" | "UNKNOWN" | "DATA_LOSS") {
                    record.record("otel.status_code", "error");
                }
                crate::metrics::rpc(transport, method, code, started.elapsed());
                result.map(|mut response| {
                    response.headers_mut().remove(CODE_HEADER);
                    response
                })
            }
            .instrument(span),
        )
    }
}

/// The machine code of a response: the one the transport set, else the
/// gRPC status of a trailers-only answer, else the HTTP status class.
fn result_code<R>(response: &http::Response<R>) -> &'static str {
    if let Some(ResultCode(code)) = response.extensions().get::<ResultCode>() {
        return code;
    }
    let headers = response.headers();
    if let Some(code) = headers
        .get(CODE_HEADER)
        .and_then(|v| known_code(v.as_bytes()))
    {
        return code;
    }
    if let Some(status) = headers.get("grpc-status") {
        return grpc_code_name(tonic::Code::from_bytes(status.as_bytes()));
    }
    match response.status().as_u16() {
        200..=399 => "OK",
        404 => "NOT_FOUND",
        405 => "METHOD_NOT_ALLOWED",
        400..=499 => "INVALID_ARGUMENT",
        503 => "UNAVAILABLE",
        _ => "INTERNAL",
    }
}

/// A machine code from its text, as a static label (unknown text: none).
fn known_code(text: &[u8]) -> Option<&'static str> {
    crate::error::ErrorCode::ALL
        .iter()
        .map(|c| c.as_str())
        .find(|c| c.as_bytes() == text)
}

fn grpc_code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

/// gRPC paths `/package.Service/Method` of the services this server
/// serves, as `(span name, method label)`; anything else is "unknown".
pub fn grpc_call_name(path: &str) -> (&'static str, &'static str) {
    static KNOWN: OnceLock<Vec<(String, &'static str, &'static str)>> = OnceLock::new();
    let known = KNOWN.get_or_init(|| {
        let mut paths: Vec<(String, String)> = Vec::new();
        for set in [
            crate::proto::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
        ] {
            if let Ok(set) = <prost_types::FileDescriptorSet as prost::Message>::decode(set) {
                for file in set.file {
                    for service in &file.service {
                        for method in &service.method {
                            paths.push((
                                format!("{}.{}", file.package(), service.name()),
                                method.name().to_owned(),
                            ));
                        }
                    }
                }
            }
        }
        for reflection in [
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
        ] {
            paths.push((reflection.to_owned(), "ServerReflectionInfo".to_owned()));
        }
        // A fixed set, made once: leaking it gives the 'static labels.
        paths
            .into_iter()
            .map(|(service, method)| {
                let name: &'static str = Box::leak(format!("{service}/{method}").into_boxed_str());
                let method: &'static str = Box::leak(method.into_boxed_str());
                (format!("/{name}"), name, method)
            })
            .collect()
    });
    known
        .iter()
        .find(|(p, _, _)| p == path)
        .map_or(("unknown", "unknown"), |(_, name, method)| (*name, *method))
}

/// Logs a dependency's failures once per outage: a warning at the first
/// failure after it worked (with that error), an info line when it works
/// again (for how long it failed, how many times); the failures in between
/// are logged at debug level. An outage of the database or of the mail relay
/// is then two lines, not one per call or per attempt.
#[derive(Debug)]
pub struct Outage {
    what: &'static str,
    /// Since when it fails, and how many failures.
    failing: std::sync::Mutex<Option<(std::time::Instant, u64)>>,
}

/// The database, as every request and background task sees it.
pub static DATABASE: Outage = Outage::new("the database");

impl Outage {
    pub const fn new(what: &'static str) -> Self {
        Self {
            what,
            failing: std::sync::Mutex::new(None),
        }
    }

    /// One failure.
    pub fn failed(&self, error: &dyn std::fmt::Display) {
        let mut failing = self.failing.lock().expect("outage lock");
        match failing.as_mut() {
            Some((_, failures)) => {
                *failures += 1;
                tracing::debug!(error = %error, "{} is still failing", self.what);
            }
            None => {
                *failing = Some((std::time::Instant::now(), 1));
                tracing::warn!(
                    error = %error,
                    "{} is failing (logged once, until it works again)",
                    self.what
                );
            }
        }
    }

    /// A success: ends the outage, if there was one.
    pub fn worked(&self) {
        let ended = self.failing.lock().expect("outage lock").take();
        if let Some((since, failures)) = ended {
            tracing::info!(
                failing_for_ms = u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX),
                failures,
                "{} works again",
                self.what
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webauthn_logging_is_off_unless_the_filter_names_it() {
        assert_eq!(
            quiet_webauthn("info"),
            "info,webauthn_rs_core=off,webauthn_rs=off"
        );
        assert_eq!(
            quiet_webauthn("info,webauthn_rs_core=debug"),
            "info,webauthn_rs_core=debug"
        );
    }
}
