//! The doubles' listener: poem's TCP acceptor with `TCP_NODELAY` on every accepted connection,
//! as Go's net package (the real kube-apiserver's, the kubelet's) and Azure's front ends do.
//! Without it, a small write that follows another one waits for the peer's delayed ACK (40 ms
//! on Linux): a port-forwarded PostgreSQL session paid about 60 ms to open instead of a few.

use std::io::Result;

use poem::http::uri::Scheme;
use poem::listener::{Acceptor, TcpAcceptor};
use poem::web::{LocalAddr, RemoteAddr};
use tokio::net::TcpStream;

/// [`TcpAcceptor`], with `TCP_NODELAY` set on each connection.
pub struct NoDelay(TcpAcceptor);

impl NoDelay {
    pub fn from_tokio(listener: tokio::net::TcpListener) -> Result<NoDelay> {
        Ok(NoDelay(TcpAcceptor::from_tokio(listener)?))
    }
}

impl Acceptor for NoDelay {
    type Io = TcpStream;

    fn local_addr(&self) -> Vec<LocalAddr> {
        self.0.local_addr()
    }

    async fn accept(&mut self) -> Result<(TcpStream, LocalAddr, RemoteAddr, Scheme)> {
        let accepted = self.0.accept().await?;
        let _ = accepted.0.set_nodelay(true);
        Ok(accepted)
    }
}
