//! Listening sockets with room for a burst of new connections.

use std::io;
use std::net::SocketAddr;

use tokio::net::{lookup_host, TcpListener, TcpSocket, ToSocketAddrs};

/// How many connections the kernel keeps waiting to be accepted. tokio's (and std's)
/// `TcpListener::bind` ask for 128: a burst of more new connections than that, arriving while the
/// process is busy, has its SYNs dropped, and each of those clients waits out TCP's initial
/// retransmission timeout (1 s) before trying again — measured as a 1 s p99 at 256 concurrent
/// requests in `cocoon bench`. The kernel caps it at `net.core.somaxconn` (4096 by default since
/// Linux 5.4; raise that sysctl to queue more).
pub const LISTEN_BACKLOG: u32 = 4096;

/// Listens on the first address `address` resolves to that can be bound, with
/// [`LISTEN_BACKLOG`] and `SO_REUSEADDR` (as `TcpListener::bind` sets it).
pub async fn listen(address: impl ToSocketAddrs) -> io::Result<TcpListener> {
    let mut last_error = None;
    for address in lookup_host(address).await? {
        match listen_on(address) {
            Ok(listener) => return Ok(listener),
            Err(error) => last_error = Some(error),
        }
    }
    Err(last_error.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "the address resolves to no socket address",
        )
    }))
}

fn listen_on(address: SocketAddr) -> io::Result<TcpListener> {
    let socket = match address {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(LISTEN_BACKLOG)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::net::TcpStream;

    use super::*;

    /// More than the 128 connections `TcpListener::bind` queues, arriving at once while nobody
    /// accepts: with that backlog the kernel drops the SYNs beyond it and those clients retry
    /// only after 1 s, which the deadline below would catch.
    const BURST: usize = 300;

    #[tokio::test]
    async fn a_burst_of_connections_waits_in_the_backlog_instead_of_being_dropped() {
        // Both ends of every connection are this process's: 600 descriptors, more than a quarter
        // of a soft limit of 1 024 beside the other tests.
        crate::raise_file_limit().unwrap();
        let listener = listen("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let connecting = (0..BURST).map(|_| TcpStream::connect(address));
        let connected = tokio::time::timeout(
            Duration::from_millis(800),
            futures::future::try_join_all(connecting),
        )
        .await
        .expect("every connection of the burst is queued at once, none waits for a SYN retry")
        .unwrap();
        for _ in 0..BURST {
            tokio::time::timeout(Duration::from_millis(800), listener.accept())
                .await
                .expect("every queued connection is there to accept")
                .unwrap();
        }
        drop(connected);
    }

    #[tokio::test]
    async fn an_address_that_is_taken_is_refused() {
        let taken = listen("127.0.0.1:0").await.unwrap();
        let error = listen(taken.local_addr().unwrap()).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::AddrInUse);
    }
}
