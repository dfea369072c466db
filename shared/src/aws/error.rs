//! How SDK failures are read, once for every adapter: transport failures,
//! timeouts, throttling and server errors mean "unavailable, retry later";
//! anything else is a service error the adapter interprets by its code.

use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

/// What an SDK call's failure means to an adapter.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Unreachable, timed out, throttled past the retries, or a server error.
    Unavailable(String),
    /// The service refused the request; `code` is its error code.
    Service { code: String, message: String },
}

const THROTTLING: &[&str] = &[
    "ThrottlingException",
    "Throttling",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "LimitExceededException",
    "InternalServerError",
    "InternalFailure",
    "InternalServiceError",
    "KMSInternalException",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "DependencyTimeoutException",
];

pub(crate) fn classify<E, R>(operation: &str, err: SdkError<E, R>) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match &err {
        SdkError::ServiceError(ctx) => {
            let code = ctx.err().code().unwrap_or("Unknown").to_string();
            let message = ctx.err().message().unwrap_or_default().to_string();
            if THROTTLING.contains(&code.as_str()) {
                Failure::Unavailable(format!("{operation}: {code}: {message}"))
            } else {
                Failure::Service { code, message }
            }
        }
        _ => Failure::Unavailable(format!("{operation}: {}", DisplayErrorContext(&err))),
    }
}
