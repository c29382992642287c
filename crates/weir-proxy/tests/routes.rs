//! Route matching compiled from RouteConfigurations, against Envoy's documented semantics; and
//! everything Weir's control plane generates for its scenario folders compiles.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use envoy_types::pb::envoy::config::route::v3::{
    DirectResponseAction, HeaderMatcher, QueryParameterMatcher, Route, RouteConfiguration, RouteMatch,
    VirtualHost, header_matcher, query_parameter_matcher, route, route_match,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{RegexMatcher, StringMatcher, string_matcher};
use envoy_types::pb::google::protobuf::BoolValue;
use weir_proxy::routes::CompiledRoutes;

fn respond(status: u32) -> Option<route::Action> {
    Some(route::Action::DirectResponse(DirectResponseAction {
        status,
        ..Default::default()
    }))
}

fn route_with(name: &str, path: route_match::PathSpecifier, status: u32) -> Route {
    Route {
        name: name.into(),
        r#match: Some(RouteMatch {
            path_specifier: Some(path),
            ..Default::default()
        }),
        action: respond(status),
        ..Default::default()
    }
}

fn vhost(name: &str, domains: &[&str], routes: Vec<Route>) -> VirtualHost {
    VirtualHost {
        name: name.into(),
        domains: domains.iter().map(|d| d.to_string()).collect(),
        routes,
        ..Default::default()
    }
}

fn catch_all(name: &str) -> Vec<Route> {
    vec![route_with(
        name,
        route_match::PathSpecifier::Prefix("/".into()),
        200,
    )]
}

fn config(vhosts: Vec<VirtualHost>) -> RouteConfiguration {
    RouteConfiguration {
        name: "80".into(),
        virtual_hosts: vhosts,
        ..Default::default()
    }
}

#[test]
fn virtual_hosts_are_chosen_as_envoy_chooses_them() {
    let c = CompiledRoutes::compile(&config(vec![
        vhost(
            "exact",
            &["api.example.com", "api.example.com:8080"],
            catch_all("r"),
        ),
        vhost("suffix", &["*.example.com"], catch_all("r")),
        vhost("longer-suffix", &["*.eu.example.com"], catch_all("r")),
        vhost("prefix", &["api.*"], catch_all("r")),
        vhost("any", &["*"], catch_all("r")),
    ]))
    .unwrap();
    let pick = |authority: &str| c.virtual_host(authority).unwrap().name.clone();
    assert_eq!(pick("api.example.com"), "exact");
    assert_eq!(
        pick("API.Example.COM"),
        "exact",
        "domains match case-insensitively"
    );
    assert_eq!(pick("api.example.com:8080"), "exact");
    assert_eq!(
        pick("api.example.com:9090"),
        "prefix",
        "the authority is matched with its port, as sent"
    );
    assert_eq!(pick("shop.example.com"), "suffix");
    assert_eq!(
        pick("shop.eu.example.com"),
        "longer-suffix",
        "the longest suffix wins"
    );
    assert_eq!(
        pick("example.com"),
        "any",
        "a suffix wildcard needs something before the suffix"
    );
    assert_eq!(pick("api.internal"), "prefix");
    assert_eq!(pick("other.test"), "any");
    let no_default =
        CompiledRoutes::compile(&config(vec![vhost("exact", &["a.test"], catch_all("r"))])).unwrap();
    assert!(
        no_default.virtual_host("b.test").is_none(),
        "no virtual host: Envoy answers 404"
    );
    assert!(
        no_default.virtual_host("a.test:8080").is_none(),
        "no port stripping"
    );
}

fn header(name: &str, spec: header_matcher::HeaderMatchSpecifier, invert: bool) -> HeaderMatcher {
    HeaderMatcher {
        name: name.into(),
        header_match_specifier: Some(spec),
        invert_match: invert,
        ..Default::default()
    }
}

fn exact(s: &str) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(string_matcher::MatchPattern::Exact(s.into())),
        ..Default::default()
    }
}

#[test]
fn routes_match_in_order_on_path_headers_and_query() {
    use header_matcher::HeaderMatchSpecifier as H;
    use route_match::PathSpecifier as P;
    let mut by_header = route_with("jason", P::Prefix("/reviews".into()), 201);
    by_header.r#match.as_mut().unwrap().headers = vec![
        header("end-user", H::StringMatch(exact("jason")), false),
        header("x-skip", H::PresentMatch(true), true),
    ];
    let mut folded = route_with("folded", P::Prefix("/folded".into()), 206);
    folded.r#match.as_mut().unwrap().headers = vec![header(
        "x-team",
        H::StringMatch(StringMatcher {
            match_pattern: Some(string_matcher::MatchPattern::Prefix("PAY".into())),
            ignore_case: true,
        }),
        false,
    )];
    let mut by_query = route_with("debug", P::Prefix("/".into()), 202);
    by_query.r#match.as_mut().unwrap().query_parameters = vec![QueryParameterMatcher {
        name: "debug".into(),
        query_parameter_match_specifier: Some(
            query_parameter_matcher::QueryParameterMatchSpecifier::StringMatch(StringMatcher {
                match_pattern: Some(string_matcher::MatchPattern::SafeRegex(RegexMatcher {
                    regex: "1|true".into(),
                    ..Default::default()
                })),
                ..Default::default()
            }),
        ),
    }];
    let mut insensitive = route_with("old", P::Path("/Old".into()), 203);
    insensitive.r#match.as_mut().unwrap().case_sensitive = Some(BoolValue { value: false });
    let routes = vec![
        by_header,
        folded,
        insensitive,
        route_with(
            "regex",
            P::SafeRegex(RegexMatcher {
                regex: "/items/[0-9]+".into(),
                ..Default::default()
            }),
            204,
        ),
        route_with("api", P::PathSeparatedPrefix("/api".into()), 205),
        by_query,
        route_with("rest", P::Prefix("/".into()), 200),
    ];
    let c = CompiledRoutes::compile(&config(vec![vhost("v", &["*"], routes)])).unwrap();
    let vh = c.virtual_host("x").unwrap();
    let hit = |path: &str, headers: &[(&str, &str)], query: &[(&str, &str)]| {
        vh.route(path, headers, query).unwrap().name.clone()
    };
    assert_eq!(
        hit("/reviews/1", &[("End-User", "jason")], &[]),
        "jason",
        "header names are case-insensitive"
    );
    assert_eq!(
        hit("/reviews/1", &[("end-user", "jason"), ("x-skip", "1")], &[]),
        "rest",
        "inverted presence"
    );
    assert_eq!(
        hit("/reviews/1", &[("end-user", "Jason")], &[]),
        "rest",
        "exact values are case-sensitive"
    );
    assert_eq!(
        hit("/reviews/1", &[], &[]),
        "rest",
        "an absent header does not match"
    );
    assert_eq!(hit("/OLD", &[], &[]), "old", "case_sensitive: false");
    assert_eq!(
        hit("/folded", &[("x-team", "payments")], &[]),
        "folded",
        "ignore_case"
    );
    assert_eq!(hit("/folded", &[("x-team", "billing")], &[]), "rest");
    assert_eq!(hit("/items/42", &[], &[]), "regex");
    assert_eq!(
        hit("/items/42x", &[], &[]),
        "rest",
        "regexes match the whole path"
    );
    assert_eq!(hit("/api", &[], &[]), "api");
    assert_eq!(hit("/api/v1", &[], &[]), "api");
    assert_eq!(
        hit("/apis", &[], &[]),
        "rest",
        "path-separated prefixes stop at a /"
    );
    assert_eq!(hit("/x", &[], &[("debug", "true")]), "debug");
    assert_eq!(hit("/x", &[], &[("debug", "yes")]), "rest");
}

#[test]
fn what_cannot_be_honoured_is_an_error_naming_where() {
    use route_match::PathSpecifier as P;
    let bad_regex = config(vec![vhost(
        "reviews:9080",
        &["reviews"],
        vec![route_with(
            "broken",
            P::SafeRegex(RegexMatcher {
                regex: "(".into(),
                ..Default::default()
            }),
            200,
        )],
    )]);
    let e = CompiledRoutes::compile(&bad_regex).unwrap_err().to_string();
    assert!(
        e.contains("\"reviews:9080\"") && e.contains("\"broken\"") && e.contains("invalid regex"),
        "{e}"
    );
    let duplicate = config(vec![
        vhost("a", &["x.test"], catch_all("r")),
        vhost("b", &["X.test"], catch_all("r")),
    ]);
    let e = CompiledRoutes::compile(&duplicate).unwrap_err().to_string();
    assert!(e.contains("also in an earlier virtual host"), "{e}");
    let mut connect = route_with("c", P::Prefix("/".into()), 200);
    connect.r#match.as_mut().unwrap().path_specifier = Some(P::ConnectMatcher(Default::default()));
    let e = CompiledRoutes::compile(&config(vec![vhost("v", &["*"], vec![connect])]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("CONNECT"), "{e}");
    let mut no_action = route_with("n", P::Prefix("/".into()), 200);
    no_action.action = None;
    let e = CompiledRoutes::compile(&config(vec![vhost("v", &["*"], vec![no_action])]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("without an action"), "{e}");
}
