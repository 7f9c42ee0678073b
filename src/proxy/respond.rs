//! Writing the gateway's own answers: refusals and upstream failures, rendered from the one
//! table in [`crate::outcome`] as HTTP or, on gRPC routes, as gRPC statuses; and the
//! pingora errors read as upstream failures.

use super::decision_id;
use crate::outcome::{body, grpc_message, grpc_status_for, Refusal, UpstreamFailure};
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::{Error, ErrorSource, ErrorType, Result};

/// How the gateway's own answers are shaped for a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// A status and a JSON body.
    Http,
    /// A trailers-only gRPC answer: HTTP 200, `grpc-status` and `grpc-message`, no body.
    Grpc,
}

/// Writes `refusal` as the complete response.
pub async fn send_refusal(
    session: &mut Session,
    refusal: &Refusal,
    decision_id: &str,
    dialect: Dialect,
) -> Result<()> {
    let mut header = head(refusal.status(), refusal.reason(), decision_id, dialect)?;
    if let Some(w) = refusal.www_authenticate() {
        header.insert_header(http::header::WWW_AUTHENTICATE, &*w)?;
    }
    if let Some(s) = refusal.retry_after() {
        header.insert_header(http::header::RETRY_AFTER, s.to_string())?;
    }
    for (n, v) in refusal.extra_headers() {
        header.append_header(n.clone(), v.clone())?;
    }
    write(
        session,
        header,
        refusal.status(),
        refusal.reason(),
        decision_id,
        dialect,
    )
    .await
}

/// Writes the answer for an allowed request whose upstream failed.
pub async fn send_failure(
    session: &mut Session,
    failure: UpstreamFailure,
    decision_id: &str,
    dialect: Dialect,
) -> Result<()> {
    let header = head(failure.status(), failure.reason(), decision_id, dialect)?;
    write(
        session,
        header,
        failure.status(),
        failure.reason(),
        decision_id,
        dialect,
    )
    .await
}

/// Ends a gRPC answer already under way with the gateway's status in its trailers, as a
/// gRPC server ends a call: how a client learns why the stream guard ended its stream.
pub async fn send_grpc_trailers(
    session: &mut Session,
    status: u16,
    reason: &str,
    decision_id: &str,
) -> Result<()> {
    let value = |v: &str| {
        http::HeaderValue::from_str(v)
            .map_err(|e| Error::because(ErrorType::InternalError, "gRPC trailer", e))
    };
    let mut trailers = http::HeaderMap::with_capacity(3);
    trailers.insert(
        "grpc-status",
        http::HeaderValue::from(u16::from(grpc_status_for(status))),
    );
    trailers.insert("grpc-message", value(&grpc_message(reason))?);
    trailers.insert(decision_id::HEADER, decision_id::header_value(decision_id)?);
    session.write_response_trailers(trailers).await
}

fn head(status: u16, reason: &str, decision_id: &str, dialect: Dialect) -> Result<ResponseHeader> {
    if dialect == Dialect::Grpc {
        let mut header = ResponseHeader::build(200, Some(6))?;
        header.insert_header(http::header::CONTENT_TYPE, "application/grpc")?;
        header.insert_header("grpc-status", grpc_status_for(status).to_string())?;
        header.insert_header("grpc-message", grpc_message(reason))?;
        header.insert_header(http::header::CONTENT_LENGTH, "0")?;
        header.insert_header(decision_id::HEADER, decision_id::header_value(decision_id)?)?;
        return Ok(header);
    }
    let len = body(status, reason, decision_id).len();
    let mut header = ResponseHeader::build(status, Some(6))?;
    header.insert_header(http::header::CONTENT_TYPE, "application/json")?;
    header.insert_header(http::header::CONTENT_LENGTH, len.to_string())?;
    header.insert_header(http::header::CACHE_CONTROL, "no-store")?;
    header.insert_header(decision_id::HEADER, decision_id::header_value(decision_id)?)?;
    Ok(header)
}

async fn write(
    session: &mut Session,
    header: ResponseHeader,
    status: u16,
    reason: &str,
    decision_id: &str,
    dialect: Dialect,
) -> Result<()> {
    if dialect == Dialect::Grpc {
        // Trailers-only: the status travels in the one header block that ends the stream.
        return session.write_response_header(Box::new(header), true).await;
    }
    session
        .write_response_header(Box::new(header), false)
        .await?;
    session
        .write_response_body(Some(body(status, reason, decision_id)), true)
        .await?;
    Ok(())
}

/// How a pingora error that ended an allowed request reads.
pub fn upstream_failure(e: &Error) -> UpstreamFailure {
    match e.etype() {
        _ if crate::tls::is_upstream_tls_error(e) => UpstreamFailure::Tls,
        ErrorType::HTTPStatus(code) => UpstreamFailure::Status(*code),
        ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout => {
            UpstreamFailure::Timeout
        }
        ErrorType::ConnectRefused
        | ErrorType::ConnectNoRoute
        | ErrorType::ConnectError
        | ErrorType::ConnectProxyFailure
        | ErrorType::SocketError => UpstreamFailure::Unreachable,
        _ => match e.esource() {
            ErrorSource::Upstream => UpstreamFailure::Error,
            ErrorSource::Downstream => UpstreamFailure::BadRequest,
            _ => UpstreamFailure::Internal,
        },
    }
}

/// True when the client went away: it needs no answer.
pub fn client_went_away(e: &Error) -> bool {
    matches!(
        e.etype(),
        ErrorType::ReadError | ErrorType::WriteError | ErrorType::ConnectionClosed
    ) && *e.esource() == ErrorSource::Downstream
}
