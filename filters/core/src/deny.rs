//! The one shape every Portcullis filter denies with: a status, a stable reason code, an
//! RFC 9457 `application/problem+json` body and any protocol headers (`WWW-Authenticate`,
//! `Retry-After`). A denial is a value; the adapter turns it into a local reply.

use serde_json::json;

/// A decision to answer the client locally instead of forwarding the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// HTTP status.
    pub status: u16,
    /// Stable machine-readable reason code, e.g. `token_expired`.
    pub reason: &'static str,
    /// Short human explanation; fixed text, never request data (no tokens, claims or PII).
    pub detail: &'static str,
    /// Which filter decided (`authn`, `ratelimit`, …).
    pub filter: &'static str,
    /// Extra response headers.
    pub headers: Vec<(&'static str, String)>,
    /// Extra problem+json members (e.g. the schema filter's `errors` list); values must be
    /// free of request data that could be secret or personal.
    pub members: Vec<(&'static str, serde_json::Value)>,
}

impl Denial {
    /// A denial with no extra headers.
    pub fn new(
        filter: &'static str,
        status: u16,
        reason: &'static str,
        detail: &'static str,
    ) -> Self {
        Denial {
            status,
            reason,
            detail,
            filter,
            headers: Vec::new(),
            members: Vec::new(),
        }
    }

    /// Adds a response header.
    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// Adds a problem+json member.
    pub fn with_member(mut self, name: &'static str, value: serde_json::Value) -> Self {
        self.members.push((name, value));
        self
    }

    /// The problem+json body (`type` is `about:blank`, so `title` is the status phrase; the
    /// `reason` and `filter` extension members carry our taxonomy).
    pub fn body(&self) -> Vec<u8> {
        let mut body = json!({
            "type": "about:blank",
            "title": status_phrase(self.status),
            "status": self.status,
            "detail": self.detail,
            "reason": self.reason,
            "filter": self.filter,
        });
        if let Some(obj) = body.as_object_mut() {
            for (k, v) in &self.members {
                obj.insert((*k).to_string(), v.clone());
            }
        }
        body.to_string().into_bytes()
    }

    /// All response headers, content type included.
    pub fn response_headers(&self) -> Vec<(&'static str, &str)> {
        let mut h: Vec<(&'static str, &str)> = vec![
            ("content-type", "application/problem+json"),
            ("cache-control", "no-store"),
            ("x-portcullis-reason", self.reason),
        ];
        h.extend(self.headers.iter().map(|(k, v)| (*k, v.as_str())));
        h
    }
}

/// A filter's reason codes as a type: every code a filter can answer with is one variant,
/// carrying its status; metrics and the README's tables are checked against [`Reason::ALL`].
pub trait Reason: Copy + Eq + std::fmt::Debug + 'static {
    /// The filter answering with these reasons.
    const FILTER: &'static str;
    /// Every variant, in declaration order.
    const ALL: &'static [Self];
    /// The stable code (`token_expired`).
    fn code(self) -> &'static str;
    /// The HTTP status.
    fn status(self) -> u16;
}

/// Declares a filter's reason enum: `Variant = ("code", status)` lines.
#[macro_export]
macro_rules! reasons {
    (
        $(#[$meta:meta])*
        pub enum $name:ident for $filter:literal {
            $( $(#[$vmeta:meta])* $variant:ident = ($code:literal, $status:literal) ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant ),+
        }

        impl $crate::deny::Reason for $name {
            const FILTER: &'static str = $filter;
            const ALL: &'static [Self] = &[ $( $name::$variant ),+ ];
            fn code(self) -> &'static str {
                match self { $( $name::$variant => $code ),+ }
            }
            fn status(self) -> u16 {
                match self { $( $name::$variant => $status ),+ }
            }
        }
    };
}

impl Denial {
    /// A denial for a reason of a filter's enum (its status and filter come with it).
    pub fn of<R: Reason>(reason: R, detail: &'static str) -> Self {
        Denial::new(R::FILTER, reason.status(), reason.code(), detail)
    }
}

/// The IANA reason phrase for the statuses Portcullis answers with.
pub fn status_phrase(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_is_problem_json_with_reason_and_filter() {
        let d = Denial::new(
            "authn",
            401,
            "token_expired",
            "The access token has expired.",
        )
        .with_header("www-authenticate", "Bearer error=\"invalid_token\"");
        let v: serde_json::Value = serde_json::from_slice(&d.body()).unwrap();
        assert_eq!(v["status"], 401);
        assert_eq!(v["title"], "Unauthorized");
        assert_eq!(v["reason"], "token_expired");
        assert_eq!(v["filter"], "authn");
        let h = d.response_headers();
        assert!(h.contains(&("content-type", "application/problem+json")));
        assert!(h.contains(&("www-authenticate", "Bearer error=\"invalid_token\"")));
    }
}
