//! Port protocols as Istio reads them (`pkg/config/protocol`).

use std::fmt;

/// A port's protocol. `Auto` means unset: Istio sniffs HTTP from TCP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[allow(missing_docs)]
pub enum Protocol {
    Http,
    Http2,
    HttpProxy,
    Grpc,
    GrpcWeb,
    Https,
    Tls,
    Tcp,
    Udp,
    Mongo,
    Redis,
    Mysql,
    /// Not declared: detected per connection.
    Auto,
}

impl Protocol {
    /// Parses a protocol name, case-insensitively; "" is [`Protocol::Auto`].
    /// Returns `None` for names Istio does not know.
    pub fn parse(name: &str) -> Option<Protocol> {
        Some(match name.to_ascii_lowercase().as_str() {
            "" => Protocol::Auto,
            "http" => Protocol::Http,
            "http2" => Protocol::Http2,
            "http_proxy" => Protocol::HttpProxy,
            "grpc" => Protocol::Grpc,
            "grpc-web" => Protocol::GrpcWeb,
            "https" => Protocol::Https,
            "tls" => Protocol::Tls,
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            "mongo" => Protocol::Mongo,
            "redis" => Protocol::Redis,
            "mysql" => Protocol::Mysql,
            _ => return None,
        })
    }

    /// The protocol of a Kubernetes Service port: `appProtocol` when set (`kubernetes.io/h2c`
    /// is HTTP2), else the port-name prefix convention (`http-web`, `grpc`, `tcp-db`), else auto.
    pub fn of_kubernetes_port(name: &str, app_protocol: Option<&str>) -> Protocol {
        if let Some(app) = app_protocol.filter(|a| !a.is_empty()) {
            match app {
                "kubernetes.io/h2c" => return Protocol::Http2,
                "kubernetes.io/ws" | "kubernetes.io/wss" => return Protocol::Http,
                _ => {
                    if let Some(p) = Protocol::parse(app) {
                        return p;
                    }
                }
            }
        }
        let prefix = name.split('-').next().unwrap_or("");
        match Protocol::parse(prefix) {
            Some(Protocol::Udp) | None => Protocol::Auto,
            Some(p) => p,
        }
    }

    /// HTTP-class: HTTP, HTTP2, HTTP_PROXY, GRPC, GRPC-Web.
    pub fn is_http(self) -> bool {
        matches!(
            self,
            Protocol::Http | Protocol::Http2 | Protocol::HttpProxy | Protocol::Grpc | Protocol::GrpcWeb
        )
    }

    /// TLS-class: HTTPS, TLS.
    pub fn is_tls(self) -> bool {
        matches!(self, Protocol::Https | Protocol::Tls)
    }

    /// Opaque TCP: everything that is neither HTTP- nor TLS-class, and not auto-detected.
    pub fn is_tcp(self) -> bool {
        matches!(
            self,
            Protocol::Tcp | Protocol::Mongo | Protocol::Redis | Protocol::Mysql
        )
    }

    /// The name Istio prints.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "HTTP",
            Protocol::Http2 => "HTTP2",
            Protocol::HttpProxy => "HTTP_PROXY",
            Protocol::Grpc => "GRPC",
            Protocol::GrpcWeb => "GRPC-Web",
            Protocol::Https => "HTTPS",
            Protocol::Tls => "TLS",
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Mongo => "Mongo",
            Protocol::Redis => "Redis",
            Protocol::Mysql => "MySQL",
            Protocol::Auto => "UnsupportedProtocol",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_ports() {
        assert_eq!(Protocol::of_kubernetes_port("http-web", None), Protocol::Http);
        assert_eq!(Protocol::of_kubernetes_port("grpc", None), Protocol::Grpc);
        assert_eq!(Protocol::of_kubernetes_port("web", None), Protocol::Auto);
        assert_eq!(
            Protocol::of_kubernetes_port("web", Some("kubernetes.io/h2c")),
            Protocol::Http2
        );
        assert_eq!(
            Protocol::of_kubernetes_port("tcp-db", Some("mysql")),
            Protocol::Mysql
        );
    }

    #[test]
    fn classes() {
        assert!(Protocol::parse("GRPC").unwrap().is_http());
        assert!(Protocol::parse("tls").unwrap().is_tls());
        assert!(Protocol::parse("MONGO").unwrap().is_tcp());
        assert_eq!(Protocol::parse("foo"), None);
    }
}
