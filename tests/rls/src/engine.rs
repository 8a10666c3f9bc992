//! The engine: Envoy's RLS v3 `ShouldRateLimit` answered by limitador's [`AsyncRateLimiter`]
//! over its Redis storage, mapped the way Limitador's own server (limitador-server's Envoy RLS
//! service) maps it:
//!
//! - the request's `domain` is the limitador namespace (an empty domain answers `UNKNOWN`);
//! - the descriptors become the list `descriptors` of the CEL context, each one a map of its
//!   entries (`descriptors[0]['user'] == 'alice'`, `descriptors[0].user` as a variable);
//! - `hits_addend` 0 means 1;
//! - limited -> `OVER_LIMIT`, otherwise `OK`, in `overall_code` only (no `statuses`);
//! - a storage or evaluation error (Redis down) -> gRPC `UNAVAILABLE`;
//! - with [`RateLimitHeaders::DraftVersion03`], `response_headers_to_add` carries
//!   `X-RateLimit-Limit`, `X-RateLimit-Remaining` and `X-RateLimit-Reset` of the most restrictive
//!   counter (limitador-server's `--rate-limit-headers DRAFT_VERSION_03`).

use std::collections::HashMap;

use limitador::limit::{Context, Limit, Namespace};
use limitador::AsyncRateLimiter;
use tonic::{Request, Response, Status};

use crate::proto::{Code, HeaderValue, RateLimitRequest, RateLimitResponse};
use crate::server::rate_limit_service_server::RateLimitService;

/// Which rate limit headers OK and OVER_LIMIT answers carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateLimitHeaders {
    None,
    /// `X-RateLimit-{Limit,Remaining,Reset}`, draft-polli-ratelimit-headers-03.
    DraftVersion03,
}

/// The limits of a Limitador limits file (YAML: a list of `namespace`, `max_value`, `seconds`,
/// `conditions`, `variables`, optional `name`).
pub fn parse_limits(yaml: &str) -> Result<Vec<Limit>, String> {
    serde_norway::from_str::<Vec<Limit>>(yaml).map_err(|e| format!("limits file: {e}"))
}

/// The namespace and the CEL context limitador evaluates for `req`.
pub fn namespace_and_context(req: &RateLimitRequest) -> (Namespace, Context<'static>) {
    let descriptors: Vec<HashMap<String, String>> = req
        .descriptors
        .iter()
        .map(|d| {
            d.entries
                .iter()
                .map(|e| (e.key.clone(), e.value.clone()))
                .collect()
        })
        .collect();
    let mut ctx = Context::default();
    ctx.list_binding("descriptors".to_string(), descriptors);
    (Namespace::from(req.domain.clone()), ctx)
}

/// The RLS v3 service over a limiter.
pub struct Engine {
    limiter: AsyncRateLimiter,
    headers: RateLimitHeaders,
}

impl Engine {
    pub fn new(limiter: AsyncRateLimiter, headers: RateLimitHeaders) -> Self {
        Engine { limiter, headers }
    }

    /// One `ShouldRateLimit`, without the gRPC wrapping.
    pub async fn decide(&self, req: &RateLimitRequest) -> Result<RateLimitResponse, Status> {
        if req.domain.is_empty() {
            return Ok(response(Code::Unknown, Vec::new()));
        }
        let (namespace, ctx) = namespace_and_context(req);
        let hits = if req.hits_addend == 0 {
            1
        } else {
            u64::from(req.hits_addend)
        };
        let mut result = self
            .limiter
            .check_rate_limited_and_update(&namespace, &ctx, hits)
            .await
            .map_err(|e| {
                eprintln!("palisade-rls: {e}");
                Status::unavailable("Service unavailable")
            })?;
        let code = if result.limited {
            Code::OverLimit
        } else {
            Code::Ok
        };
        let headers = match self.headers {
            RateLimitHeaders::None => Vec::new(),
            RateLimitHeaders::DraftVersion03 => {
                let mut headers: Vec<HeaderValue> = result
                    .response_header()
                    .into_iter()
                    .map(|(key, value)| HeaderValue {
                        key,
                        value,
                        raw_value: Vec::new(),
                    })
                    .collect();
                headers.sort_by(|a, b| a.key.cmp(&b.key));
                headers
            }
        };
        Ok(response(code, headers))
    }
}

fn response(code: Code, response_headers_to_add: Vec<HeaderValue>) -> RateLimitResponse {
    RateLimitResponse {
        overall_code: code as i32,
        statuses: Vec::new(),
        response_headers_to_add,
        request_headers_to_add: Vec::new(),
        raw_body: Vec::new(),
    }
}

#[tonic::async_trait]
impl RateLimitService for Engine {
    async fn should_rate_limit(
        &self,
        request: Request<RateLimitRequest>,
    ) -> Result<Response<RateLimitResponse>, Status> {
        self.decide(request.get_ref()).await.map(Response::new)
    }
}

#[cfg(test)]
mod tests;
