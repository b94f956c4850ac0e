//! Accepting connections in a way that survives running out of file descriptors.

use std::io;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

use crate::backoff::Backoff;
use crate::{LogThrottle, Slots};

/// First pause after a failed accept; doubles while accepting keeps failing.
const FIRST_PAUSE: Duration = Duration::from_millis(10);
/// Longest pause between attempts.
const LONGEST_PAUSE: Duration = Duration::from_secs(1);

/// A listener whose [`accept`](Self::accept) only returns connections: failures that concern
/// one connection are skipped, and failures of the process (out of file descriptors, of memory)
/// close an idle connection if there is one, pause with a growing backoff and are logged at most
/// once per second with the number of failures held back.
#[derive(Debug)]
pub struct Accepting {
    listener: TcpListener,
    /// The port's name, for logs.
    port: &'static str,
    backoff: Backoff,
    warnings: LogThrottle,
}

impl Accepting {
    /// Accepts on `listener`, naming it `port` in logs.
    pub fn new(listener: TcpListener, port: &'static str) -> Self {
        Accepting {
            listener,
            port,
            backoff: Backoff::new(FIRST_PAUSE, LONGEST_PAUSE),
            warnings: LogThrottle::per_second(),
        }
    }

    /// The next connection. When the process is out of descriptors, `slots` gives up its
    /// longest-idle connection to make one free.
    pub async fn accept(&mut self, slots: &Slots) -> TcpStream {
        loop {
            match self.listener.accept().await {
                Ok((tcp, _)) => {
                    self.backoff.reset();
                    return tcp;
                }
                Err(error) if concerns_one_connection(&error) => {
                    tracing::debug!(port = self.port, %error, "a connection failed before it was accepted");
                }
                Err(error) => {
                    let freed = slots.evict_idle();
                    let pause = self.backoff.next_delay();
                    if let Some(suppressed) = self.warnings.admit() {
                        tracing::warn!(
                            port = self.port,
                            %error,
                            suppressed,
                            closed_an_idle_connection = freed,
                            ?pause,
                            "cannot accept connections (out of file descriptors?); pausing"
                        );
                    }
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }
}

/// Errors that end one connection and say nothing about the listener.
fn concerns_one_connection(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
    )
}
