//! Upstream connections: TCP or unix-domain sockets, opened with a connect timeout, with errors
//! that say what happened in terms an operator can act on.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

use crate::convert::Target;

/// Why an upstream connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The connect timeout passed.
    #[error("connection to {0} timed out after {1:?}")]
    Timeout(String, Duration),
    /// The upstream refused or the network failed.
    #[error("connection to {0} failed: {1}")]
    Io(String, io::Error),
    /// The name did not resolve.
    #[error("DNS resolution of {0} failed: {1}")]
    Resolve(String, String),
    /// The TLS handshake failed (bad certificate, no common protocol…).
    #[error("TLS handshake with {0} failed: {1}")]
    Tls(String, io::Error),
}

/// A connected stream.
#[derive(Debug)]
pub enum Io {
    /// TCP.
    Tcp(TcpStream),
    /// Unix-domain socket.
    Unix(UnixStream),
    /// TLS over one of the others.
    Tls(Box<tokio_rustls::client::TlsStream<Io>>),
}

impl Io {
    /// The peer, for TCP.
    pub fn peer(&self) -> Option<SocketAddr> {
        match self {
            Io::Tcp(t) => t.peer_addr().ok(),
            Io::Unix(_) => None,
            Io::Tls(t) => t.get_ref().0.peer(),
        }
    }

    /// Whether a connection nobody is reading from is still open and has said nothing, told
    /// from the runtime's readiness (a system call only when the socket was reported readable)
    /// and without registering a waker. `None` for TLS, whose records need a real read.
    pub fn open_and_silent(&self) -> Option<bool> {
        let mut probe = [0u8; 1];
        let read = match self {
            Io::Tcp(t) => t.try_read(&mut probe),
            Io::Unix(u) => u.try_read(&mut probe),
            Io::Tls(_) => return None,
        };
        // Anything but "nothing to read yet": closed, failed, or something unasked.
        Some(matches!(read, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock))
    }
}

/// Addresses of a name, and until when they may be used (the records' TTL).
#[derive(Clone, Debug)]
pub struct Resolved {
    /// The addresses, with the port.
    pub addrs: Vec<SocketAddr>,
    /// When the shortest TTL runs out.
    pub valid_until: std::time::Instant,
}

/// The process's DNS resolver (hickory, configured from `/etc/resolv.conf` and honouring
/// `/etc/hosts`); `None` when the system configuration cannot be read.
fn resolver() -> Option<&'static hickory_resolver::TokioResolver> {
    static RESOLVER: std::sync::OnceLock<Option<hickory_resolver::TokioResolver>> =
        std::sync::OnceLock::new();
    RESOLVER
        .get_or_init(|| match hickory_resolver::Resolver::builder_tokio() {
            Ok(b) => Some(b.build()),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the system DNS configuration; using the system resolver without TTLs");
                None
            }
        })
        .as_ref()
}

/// Resolves a name (an IP literal resolves to itself), with the records' TTL.
pub async fn resolve_with_ttl(host: &str, port: u16) -> Result<Resolved, String> {
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Ok(Resolved {
            addrs: vec![SocketAddr::new(ip, port)],
            valid_until: std::time::Instant::now() + Duration::from_secs(86400),
        });
    }
    if let Some(r) = resolver() {
        let lookup = r.lookup_ip(host).await.map_err(|e| e.to_string())?;
        let addrs: Vec<SocketAddr> = lookup.iter().map(|ip| SocketAddr::new(ip, port)).collect();
        if addrs.is_empty() {
            return Err("no addresses".into());
        }
        return Ok(Resolved {
            addrs,
            valid_until: lookup.valid_until(),
        });
    }
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| e.to_string())?
        .collect();
    if addrs.is_empty() {
        return Err("no addresses".into());
    }
    Ok(Resolved {
        addrs,
        valid_until: std::time::Instant::now() + Duration::from_secs(5),
    })
}

/// Resolves a name.
pub async fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
    resolve_with_ttl(host, port).await.map(|r| r.addrs)
}

async fn tcp_connect(addr: SocketAddr, source: Option<SocketAddr>) -> io::Result<TcpStream> {
    let Some(source) = source else {
        return TcpStream::connect(addr).await;
    };
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.bind(source)?;
    socket.connect(addr).await
}

/// Connects to a target within `timeout` (from `source`, if given); a name is resolved to the
/// addresses of `family`, tried in its order.
pub async fn connect(
    target: &Target,
    timeout: Duration,
    source: Option<SocketAddr>,
    family: crate::cluster::Family,
) -> Result<Io, ConnectError> {
    let attempt = async {
        match target {
            Target::Socket(addr) => {
                let s = tcp_connect(*addr, source)
                    .await
                    .map_err(|e| ConnectError::Io(target.to_string(), e))?;
                let _ = s.set_nodelay(true);
                Ok(Io::Tcp(s))
            }
            Target::Unix(path) => UnixStream::connect(path)
                .await
                .map(Io::Unix)
                .map_err(|e| ConnectError::Io(target.to_string(), e)),
            Target::Name(host, port) => {
                let addrs = family.order(
                    resolve(host, *port)
                        .await
                        .map_err(|e| ConnectError::Resolve(host.clone(), e))?,
                );
                if addrs.is_empty() {
                    return Err(ConnectError::Resolve(
                        host.clone(),
                        format!("no address of the family wanted ({family:?})"),
                    ));
                }
                let mut last = None;
                for addr in addrs {
                    match tcp_connect(addr, source).await {
                        Ok(s) => {
                            let _ = s.set_nodelay(true);
                            return Ok(Io::Tcp(s));
                        }
                        Err(e) => last = Some(e),
                    }
                }
                Err(ConnectError::Io(
                    target.to_string(),
                    last.unwrap_or_else(|| io::Error::other("no address")),
                ))
            }
        }
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(r) => r,
        Err(_) => Err(ConnectError::Timeout(target.to_string(), timeout)),
    }
}

/// TCP keepalive for upstream connections (`upstream_connection_options.tcp_keepalive`);
/// what is not set keeps the system's value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Keepalive {
    /// Idle time before probes start.
    pub time: Option<Duration>,
    /// Time between probes.
    pub interval: Option<Duration>,
    /// Probes before the connection is dropped.
    pub probes: Option<u32>,
}

impl Keepalive {
    fn apply(&self, stream: &TcpStream) -> io::Result<()> {
        let mut k = socket2::TcpKeepalive::new();
        if let Some(t) = self.time {
            k = k.with_time(t);
        }
        if let Some(i) = self.interval {
            k = k.with_interval(i);
        }
        if let Some(p) = self.probes {
            k = k.with_retries(p);
        }
        socket2::SockRef::from(stream).set_tcp_keepalive(&k)
    }
}

/// How a cluster connects to its endpoints.
#[derive(Clone, Debug)]
pub struct ConnectSettings {
    /// Connect timeout (TCP and TLS handshake each).
    pub timeout: Duration,
    /// Source address (`upstream_bind_config`).
    pub source: Option<SocketAddr>,
    /// TLS origination.
    pub tls: Option<crate::tls::UpstreamTls>,
    /// TCP keepalive.
    pub keepalive: Option<Keepalive>,
    /// The address family, and order, of the addresses a name is resolved to when connecting
    /// (a dynamic forward proxy's, whose hosts are names).
    pub family: crate::cluster::Family,
}

/// Connects and, when the settings say so, sets keepalive and originates TLS.
pub async fn connect_with(target: &Target, settings: &ConnectSettings) -> Result<Io, ConnectError> {
    let io = connect(target, settings.timeout, settings.source, settings.family).await?;
    if let (Some(k), Io::Tcp(s)) = (&settings.keepalive, &io)
        && let Err(e) = k.apply(s)
    {
        tracing::debug!(target = %target, error = %e, "could not set TCP keepalive");
    }
    let Some(tls) = &settings.tls else { return Ok(io) };
    let timeout = settings.timeout;
    let name = match (&tls.sni, io.peer()) {
        (Some(sni), _) => sni.clone(),
        // No SNI configured: none is sent (an IP address name sends none).
        (None, Some(peer)) => rustls::pki_types::ServerName::IpAddress(peer.ip().into()),
        (None, None) => {
            rustls::pki_types::ServerName::IpAddress(std::net::IpAddr::from([127, 0, 0, 1]).into())
        }
    };
    let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
    match tokio::time::timeout(timeout, connector.connect(name, io)).await {
        Ok(Ok(stream)) => Ok(Io::Tls(Box::new(stream))),
        Ok(Err(e)) => Err(ConnectError::Tls(target.to_string(), e)),
        Err(_) => Err(ConnectError::Timeout(target.to_string(), timeout)),
    }
}

impl AsyncRead for Io {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Io::Unix(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Io::Unix(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Tcp(s) => Pin::new(s).poll_flush(cx),
            Io::Unix(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Io::Unix(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Io::Tcp(s) => s.is_write_vectored(),
            Io::Unix(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::Family;

    #[tokio::test]
    async fn a_name_is_reached_only_through_addresses_of_the_family_wanted() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        // `localhost` has an IPv4 address here (and maybe an IPv6 one, where nothing listens).
        let target = Target::Name("localhost".into(), port);
        let connect = |family| connect(&target, Duration::from_secs(5), None, family);
        assert!(connect(Family::V4).await.is_ok());
        assert!(connect(Family::V4Preferred).await.is_ok());
        match connect(Family::V6).await {
            Err(ConnectError::Resolve(..) | ConnectError::Io(..)) => {}
            Err(other) => panic!("IPv6 only: {other}"),
            Ok(_) => panic!("IPv6 only, yet connected to the IPv4 listener"),
        }
    }
}
