//! The tower layer at the RPC edge, around every call of the gRPC server:
//! it counts each admin call by method and status code and times it, so no
//! RPC repeats that code, and it answers `INTERNAL` for a call whose
//! handler panicked instead of letting the panic reset the HTTP/2 stream
//! (logged, and counted in `wshub_admin_panics_total`). Handlers validate
//! every field, so a panic is a bug in wshub, never an answer to bad input.
//!
//! The status is read from the response headers: a failed unary call is a
//! trailers-only response carrying `grpc-status` there; a response without
//! it in the headers started successfully (OK). Latency is measured to the
//! response headers, which for streams is their start.

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use futures_util::FutureExt;
use tonic::Code;
use tower::{Layer, Service};

use crate::metrics;

const ADMIN_PREFIX: &str = "/wshub.admin.v1.Admin/";
/// Method label values; anything else is `unknown`, so cardinality stays fixed.
const METHODS: [&str; 9] = [
    "Broadcast",
    "SendToClient",
    "ListClients",
    "GetClient",
    "KickClients",
    "GetStats",
    "WatchEvents",
    "Drain",
    "History",
];

/// Creates every method's series at zero (see [`metrics::admin_method_series`]).
pub fn register_series() {
    METHODS.iter().for_each(|method| metrics::admin_method_series(method));
}

#[derive(Debug, Clone, Copy)]
pub struct MetricsLayer;

impl<S> Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        MetricsService { inner }
    }
}

#[derive(Debug, Clone)]
pub struct MetricsService<S> {
    inner: S,
}

impl<S, B, RB> Service<http::Request<B>> for MetricsService<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    RB: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let path = request.uri().path();
        let method = path
            .strip_prefix(ADMIN_PREFIX)
            .map(|m| METHODS.iter().copied().find(|known| *known == m).unwrap_or("unknown"));
        let start = Instant::now();
        let call = catch_unwind(AssertUnwindSafe(|| self.inner.call(request)));
        Box::pin(async move {
            let outcome = match call {
                Ok(call) => AssertUnwindSafe(call).catch_unwind().await,
                Err(panic) => Err(panic),
            };
            let response = outcome.unwrap_or_else(|panic| {
                let what = crate::error::panic_message(&*panic);
                tracing::error!(method = method.unwrap_or("other"), panic = %what, "admin handler panicked; answered INTERNAL");
                metrics::admin_panic();
                Ok(tonic::Status::internal("internal error").into_http())
            });
            if let Some(method) = method {
                let code = match &response {
                    Ok(r) => r
                        .headers()
                        .get("grpc-status")
                        .map_or(Code::Ok, |v| Code::from_bytes(v.as_bytes())),
                    Err(_) => Code::Internal,
                };
                metrics::admin_request(method, code_name(code), start.elapsed());
            }
            response
        })
    }
}

fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_handler_answers_internal() {
        let inner = tower::service_fn(|_: http::Request<()>| async {
            if true {
                panic!("a bug");
            }
            Ok::<_, std::convert::Infallible>(http::Response::new(tonic::body::Body::default()))
        });
        let mut service = MetricsLayer.layer(inner);
        let response = service.call(http::Request::new(())).await.unwrap();
        assert_eq!(
            response.headers().get("grpc-status").map(|v| v.as_bytes()),
            Some(&b"13"[..])
        );
    }
}
