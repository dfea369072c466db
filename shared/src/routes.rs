//! The API's route table: one list that the functions' routers, the
//! authorizer's policy builder and the local gateway all read, so they cannot
//! disagree about which routes exist and who may call them.

use crate::domain::{Permission, Principal};

/// Which Lambda function serves a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Function {
    Catalog,
    Keys,
    Oauth,
    /// Reading the audit trail (administrators).
    Audit,
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No credentials (API Gateway method with `security: []`).
    Public,
    /// An authenticated principal holding at least one of these permissions.
    AnyOf(&'static [Permission]),
    /// Any authenticated principal (its own data only, like `/v1/usage`).
    Authenticated,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub method: &'static str,
    /// Path template; `{name}` matches one non-empty segment.
    pub path: &'static str,
    pub function: Function,
    pub access: Access,
    /// The query parameters the route accepts; any other is refused.
    pub query: &'static [&'static str],
    /// What a request costs against the caller's rate limit and daily quota
    /// (protected routes only): a search scans, so it costs more.
    pub cost: u64,
}

use Permission as P;

pub const ROUTES: &[Route] = &[
    Route {
        method: "GET",
        path: "/health",
        function: Function::Catalog,
        access: Access::Public,
        query: &[],
        cost: 1,
    },
    Route {
        method: "GET",
        path: "/v1/products",
        function: Function::Catalog,
        access: Access::AnyOf(&[P::CatalogRead]),
        query: &["name", "formula", "cas", "limit", "cursor"],
        cost: 2,
    },
    Route {
        method: "GET",
        path: "/v1/products/{cas}",
        function: Function::Catalog,
        access: Access::AnyOf(&[P::CatalogRead]),
        query: &[],
        cost: 1,
    },
    Route {
        method: "PUT",
        path: "/v1/products/{cas}",
        function: Function::Catalog,
        access: Access::AnyOf(&[P::CatalogWrite]),
        query: &[],
        cost: 1,
    },
    Route {
        method: "DELETE",
        path: "/v1/products/{cas}",
        function: Function::Catalog,
        access: Access::AnyOf(&[P::CatalogDelete]),
        query: &[],
        cost: 1,
    },
    Route {
        method: "GET",
        path: "/v1/products/{cas}/manufacturing",
        function: Function::Catalog,
        access: Access::AnyOf(&[P::ManufacturingRead, P::ManufacturingReadAny]),
        query: &[],
        cost: 1,
    },
    Route {
        method: "GET",
        path: "/v1/keys",
        function: Function::Keys,
        access: Access::AnyOf(&[P::KeysOwn, P::KeysAny]),
        query: &["customer", "limit", "cursor"],
        cost: 1,
    },
    Route {
        method: "POST",
        path: "/v1/keys",
        function: Function::Keys,
        access: Access::AnyOf(&[P::KeysOwn, P::KeysAny]),
        query: &[],
        cost: 1,
    },
    Route {
        method: "DELETE",
        path: "/v1/keys/{id}",
        function: Function::Keys,
        access: Access::AnyOf(&[P::KeysOwn, P::KeysAny]),
        query: &[],
        cost: 1,
    },
    Route {
        method: "POST",
        path: "/v1/keys/{id}/rotate",
        function: Function::Keys,
        access: Access::AnyOf(&[P::KeysOwn, P::KeysAny]),
        query: &[],
        cost: 1,
    },
    Route {
        method: "GET",
        path: "/v1/usage",
        function: Function::Keys,
        access: Access::Authenticated,
        query: &["principal"],
        cost: 1,
    },
    // The authorization server. Its endpoints authenticate OAuth clients
    // themselves (client_secret_basic / client_secret_post), so the gateway
    // lets them through without the authorizer.
    Route {
        method: "POST",
        path: "/oauth/token",
        function: Function::Oauth,
        access: Access::Public,
        query: &[],
        cost: 1,
    },
    Route {
        method: "POST",
        path: "/oauth/revoke",
        function: Function::Oauth,
        access: Access::Public,
        query: &[],
        cost: 1,
    },
    Route {
        method: "POST",
        path: "/oauth/introspect",
        function: Function::Oauth,
        access: Access::Public,
        query: &[],
        cost: 1,
    },
    Route {
        method: "GET",
        path: "/.well-known/jwks.json",
        function: Function::Oauth,
        access: Access::Public,
        query: &[],
        cost: 1,
    },
    Route {
        method: "GET",
        path: "/.well-known/oauth-authorization-server",
        function: Function::Oauth,
        access: Access::Public,
        query: &[],
        cost: 1,
    },
    Route {
        method: "POST",
        path: "/v1/clients",
        function: Function::Oauth,
        access: Access::AnyOf(&[P::ClientsManage]),
        query: &[],
        cost: 1,
    },
    Route {
        method: "GET",
        path: "/v1/clients",
        function: Function::Oauth,
        access: Access::AnyOf(&[P::ClientsManage]),
        query: &["customer", "limit", "cursor"],
        cost: 1,
    },
    Route {
        method: "GET",
        path: "/v1/clients/{id}",
        function: Function::Oauth,
        access: Access::AnyOf(&[P::ClientsManage]),
        query: &[],
        cost: 1,
    },
    Route {
        method: "DELETE",
        path: "/v1/clients/{id}",
        function: Function::Oauth,
        access: Access::AnyOf(&[P::ClientsManage]),
        query: &[],
        cost: 1,
    },
    Route {
        method: "POST",
        path: "/v1/clients/{id}/rotate-secret",
        function: Function::Oauth,
        access: Access::AnyOf(&[P::ClientsManage]),
        query: &[],
        cost: 1,
    },
    Route {
        method: "GET",
        path: "/v1/audit",
        function: Function::Audit,
        access: Access::AnyOf(&[P::AuditRead]),
        query: &["principal", "customer", "from", "to", "limit", "cursor"],
        cost: 2,
    },
];

impl Route {
    /// `GET /v1/products/{cas}`: how logs, metrics and the audit trail name
    /// the route (never with the caller's path values).
    pub fn name(&self) -> String {
        format!("{} {}", self.method, self.path)
    }

    pub fn allows(&self, principal: &Principal) -> bool {
        match self.access {
            Access::Public => true,
            Access::AnyOf(perms) => perms.iter().any(|p| principal.can(*p)),
            Access::Authenticated => true,
        }
    }

    /// The path as an IAM resource pattern: `{name}` becomes `*`.
    pub fn arn_path(&self) -> String {
        self.path.split('/').map(|s| if s.starts_with('{') { "*" } else { s }).collect::<Vec<_>>().join("/")
    }

    /// Fills the template with `value` for every parameter (for tests and
    /// policy checks).
    pub fn sample_path(&self, value: &str) -> String {
        self.path.split('/').map(|s| if s.starts_with('{') { value } else { s }).collect::<Vec<_>>().join("/")
    }
}

/// Path parameters of a matched route, percent-decoded.
pub type Params = Vec<(&'static str, String)>;

#[derive(Debug, PartialEq)]
pub enum RouteMatch {
    Found(&'static Route, Params),
    /// The path exists, the method does not: the methods that do.
    MethodNotAllowed(Vec<&'static str>),
    NotFound,
}

pub fn match_route(method: &str, path: &str) -> RouteMatch {
    let mut allowed = Vec::new();
    for route in ROUTES {
        if let Some(params) = match_path(route.path, path) {
            if route.method == method {
                return RouteMatch::Found(route, params);
            }
            allowed.push(route.method);
        }
    }
    if allowed.is_empty() { RouteMatch::NotFound } else { RouteMatch::MethodNotAllowed(allowed) }
}

/// The route path of a request path that may start with the stage name
/// (`/dev/v1/products`, like an execute-api URL): as given when it names a
/// route, else without a leading `/<stage>`, so a stage may be called `v1`.
pub fn without_stage<'a>(method: &str, path: &'a str, stage: Option<&str>) -> &'a str {
    if match_route(method, path) != RouteMatch::NotFound {
        return path;
    }
    let rest = stage.and_then(|stage| path.strip_prefix('/').and_then(|p| p.strip_prefix(stage)));
    match rest {
        Some(rest) if rest.starts_with('/') => rest,
        _ => path,
    }
}

fn match_path(template: &'static str, path: &str) -> Option<Params> {
    let mut want = template.split('/');
    let mut got = path.split('/');
    let mut params = Vec::new();
    loop {
        match (want.next(), got.next()) {
            (None, None) => return Some(params),
            (Some(w), Some(g)) if w.starts_with('{') => {
                let value = percent_decode(g)?;
                if value.is_empty() {
                    return None;
                }
                params.push((w.trim_matches(|c| c == '{' || c == '}'), value));
            }
            (Some(w), Some(g)) if w == g => {}
            _ => return None,
        }
    }
}

/// Decodes `%XX` escapes; `None` for broken escapes or non-UTF-8 results.
pub fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            // Two hex digits exactly (`from_str_radix` alone would take `+A`).
            let hex = text.get(i + 1..i + 3).filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_match_with_decoded_params() {
        let RouteMatch::Found(route, params) = match_route("GET", "/v1/products/50-78-2/manufacturing")
        else {
            panic!("no match");
        };
        assert_eq!(route.path, "/v1/products/{cas}/manufacturing");
        assert_eq!(params, vec![("cas", "50-78-2".to_string())]);
        let RouteMatch::Found(_, params) = match_route("GET", "/v1/products/50%2078-2") else { panic!() };
        assert_eq!(params, vec![("cas", "50 78-2".to_string())]);
    }

    #[test]
    fn unknown_method_lists_allowed_ones_and_unknown_path_is_not_found() {
        assert_eq!(
            match_route("PATCH", "/v1/products/50-78-2"),
            RouteMatch::MethodNotAllowed(vec!["GET", "PUT", "DELETE"])
        );
        assert_eq!(match_route("GET", "/v1/product"), RouteMatch::NotFound);
        assert_eq!(match_route("GET", "/v1/products/"), RouteMatch::NotFound);
        assert_eq!(match_route("GET", "/v1/products//manufacturing"), RouteMatch::NotFound);
        assert_eq!(match_route("GET", "/v1/products/%zz"), RouteMatch::NotFound);
        assert_eq!(percent_decode("x%+41yz"), None);
        assert_eq!(percent_decode("x%-1"), None);
        assert_eq!(percent_decode("%41%2f").as_deref(), Some("A/"));
    }

    #[test]
    fn arn_paths_use_wildcards() {
        let paths: Vec<String> = ROUTES.iter().map(Route::arn_path).collect();
        assert!(paths.contains(&"/v1/products/*/manufacturing".to_string()));
        assert!(paths.contains(&"/v1/keys/*/rotate".to_string()));
    }
}
