//! Errors of the metrics API, answered as Kubernetes `Status` objects
//! (`{"kind":"Status","apiVersion":"v1","status":"Failure",...}`), as the aggregator and
//! kubectl expect. Internal errors carry detail to the log only.

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;

/// A failed request; the message is shown to the client (except for [`Error::Internal`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// 400 BadRequest: malformed path, query or selector.
    #[error("{0}")]
    BadRequest(String),
    /// 401 Unauthorized: no credentials the server trusts.
    #[error("{0}")]
    Unauthorized(String),
    /// 403 Forbidden: credentials not allowed to do this.
    #[error("{0}")]
    Forbidden(String),
    /// 404 NotFound: unknown path or metric.
    #[error("{0}")]
    NotFound(String),
    /// 405 MethodNotAllowed: the API is read-only.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// 503 ServiceUnavailable: values too old to serve; the HPA keeps its current count.
    #[error("{0}")]
    Unavailable(String),
    /// 500 InternalError: the detail goes to the log, not to the client.
    #[error("internal error")]
    Internal(String),
}

impl Error {
    /// HTTP status and Kubernetes `reason`.
    pub fn code_and_reason(&self) -> (StatusCode, &'static str) {
        match self {
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "BadRequest"),
            Self::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "Unauthorized"),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "Forbidden"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "NotFound"),
            Self::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed"),
            Self::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable"),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "InternalError"),
        }
    }

    /// The `Status` object sent to the client.
    pub fn status(&self) -> Status {
        let (code, reason) = self.code_and_reason();
        Status {
            code: Some(code.as_u16().into()),
            message: Some(self.to_string()),
            reason: Some(reason.into()),
            status: Some("Failure".into()),
            ..Status::default()
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        if let Self::Internal(detail) = &self {
            tracing::error!(%detail, "internal error");
        }
        let (code, _) = self.code_and_reason();
        (code, Json(self.status())).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_shape_and_hidden_internal_detail() {
        let json = serde_json::to_value(Error::NotFound("metric \"x\" not found".into()).status()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                               "message": "metric \"x\" not found", "reason": "NotFound", "code": 404})
        );
        let json = serde_json::to_value(Error::Internal("secret path /etc/x".into()).status()).unwrap();
        assert_eq!(json["message"], "internal error");
        assert_eq!(json["code"], 500);
    }
}
