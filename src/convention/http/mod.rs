//! The HTTP semantic conventions: how a request starts on each side ([`server`], [`client`]:
//! span name, start attributes, the measurements' attributes) and how its end is classified
//! from the response status.
//!
//! Specification: <https://opentelemetry.io/docs/specs/semconv/http/http-spans/> and
//! <https://opentelemetry.io/docs/specs/semconv/http/http-metrics/>.

pub(crate) mod client;
pub(crate) mod server;

use std::borrow::Cow;

use http::{HeaderMap, StatusCode};
use opentelemetry::KeyValue;
use opentelemetry_semantic_conventions::attribute as attr;

use super::{Convention, Ending, Who};
use crate::error;

/// The HTTP convention: the status decides, trailers mean nothing.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Http;

impl Convention for Http {
    fn trailers(&mut self, _trailers: &HeaderMap) {}

    /// A completed response: its status (a server's 5xx, a client's ≥ 400); the body's failure;
    /// the inner service's error; a panic. Dropped early: on a server the client went away
    /// (`cancelled` before the head, `response_body_dropped` after it); on a client the caller
    /// chose to stop, no error.
    fn outcome(
        &mut self,
        who: Who,
        status: Option<StatusCode>,
        ending: &Ending,
        _elapsed: std::time::Duration,
    ) -> Option<Cow<'static, str>> {
        match ending {
            Ending::Completed(Some(e)) | Ending::Failed(e) => Some(e.clone()),
            Ending::Completed(None) => {
                let first_error = match who {
                    Who::Server => 500,
                    Who::Client => 400,
                };
                status.and_then(|s| status_error(first_error, s))
            }
            Ending::Dropped { head_seen } => match who {
                Who::Server if *head_seen => Some(Cow::Borrowed(error::RESPONSE_BODY_DROPPED)),
                Who::Server => Some(Cow::Borrowed(error::CANCELLED)),
                Who::Client => None,
            },
            Ending::Panicked => Some(Cow::Borrowed(error::PANIC)),
        }
    }

    fn status_attribute(&self, status: Option<StatusCode>) -> Option<KeyValue> {
        status.map(|s| KeyValue::new(attr::HTTP_RESPONSE_STATUS_CODE, i64::from(s.as_u16())))
    }
}

/// `error.type` for a response status: the code from `first_error` on (a server's 500, a
/// client's 400), `_OTHER` for codes outside `100..=599`, none otherwise.
pub(crate) fn status_error(first_error: u16, code: StatusCode) -> Option<Cow<'static, str>> {
    match code.as_u16() {
        c if (100..=599).contains(&c) && c >= first_error => {
            Some(Cow::Owned(code.as_str().to_owned()))
        }
        100..=599 => None,
        _ => Some(Cow::Borrowed(error::OTHER)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_errors_by_side() {
        let s = |c: u16| StatusCode::from_u16(c).unwrap();
        let (server, client) = (500, 400);
        assert_eq!(status_error(server, s(500)).as_deref(), Some("500"));
        assert_eq!(status_error(server, s(599)).as_deref(), Some("599"));
        assert_eq!(status_error(server, s(404)), None);
        assert_eq!(status_error(server, s(101)), None);
        assert_eq!(status_error(server, s(600)).as_deref(), Some("_OTHER"));
        assert_eq!(status_error(client, s(404)).as_deref(), Some("404"));
        assert_eq!(status_error(client, s(400)).as_deref(), Some("400"));
        assert_eq!(status_error(client, s(399)), None);
        assert_eq!(status_error(client, s(999)).as_deref(), Some("_OTHER"));
    }
}
