//! The limits of a plain-HTTP surface, as every role's configuration spells them.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Connections, and time allowed for each part of a request, on a plain-HTTP surface.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args, Serialize, Deserialize)]
#[serde(default)]
pub struct HttpLimits {
    /// Most connections open at once on each HTTP surface; 0 derives it from the process's file
    /// limit (RLIMIT_NOFILE): a quarter of it, at least 16. At the limit, the connection idle the
    /// longest is closed to make room, or the new one is refused when every one is busy.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub max_connections: usize,
    /// Seconds a client has to send a request's headers, counted from when the server starts
    /// waiting for them (for HTTP/1 that includes a keep-alive connection's wait for its next
    /// request).
    #[arg(long, default_value_t = 10, value_name = "SECONDS")]
    pub header_timeout_secs: u64,
    /// Seconds a connection may stay open with no request in flight.
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    pub idle_timeout_secs: u64,
    /// Seconds a request body may go without sending data; the request is then answered 408.
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    pub body_timeout_secs: u64,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_connections: 0,
            header_timeout_secs: 10,
            idle_timeout_secs: 60,
            body_timeout_secs: 30,
        }
    }
}

/// Connections a surface takes when the file limit cannot be read.
const FALLBACK_CONNECTIONS: usize = 256;
/// The fewest connections a derived cap allows.
const MIN_CONNECTIONS: usize = 16;

impl HttpLimits {
    /// The connection cap: the configured one, or a quarter of `file_limit` (every surface of a
    /// process, its links, database and logs share those descriptors; `cocoon dev` runs four
    /// roles in one process).
    pub fn connection_cap(&self, file_limit: Option<u64>) -> usize {
        if self.max_connections > 0 {
            return self.max_connections;
        }
        match file_limit {
            Some(limit) => usize::try_from(limit / 4)
                .unwrap_or(usize::MAX)
                .max(MIN_CONNECTIONS),
            None => FALLBACK_CONNECTIONS,
        }
    }

    /// [`header_timeout_secs`](Self::header_timeout_secs), at least one second.
    pub fn header_timeout(&self) -> Duration {
        Duration::from_secs(self.header_timeout_secs.max(1))
    }

    /// [`idle_timeout_secs`](Self::idle_timeout_secs), at least one second.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs.max(1))
    }

    /// [`body_timeout_secs`](Self::body_timeout_secs), at least one second.
    pub fn body_timeout(&self) -> Duration {
        Duration::from_secs(self.body_timeout_secs.max(1))
    }
}

/// This process's soft limit on open files (RLIMIT_NOFILE), if it has one.
pub fn file_limit() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current
}

/// The soft limit asked for when the hard one is unlimited: Linux's default `fs.nr_open`, the
/// most a process may have.
const UNLIMITED_FILES: u64 = 1 << 20;

/// Raises this process's soft limit on open files to its hard limit, as nginx and Go's runtime
/// do. The usual soft default of 1 024 exists for `select(2)`, which nothing here uses; a quarter
/// of it ([`HttpLimits::connection_cap`]) is 256 connections a surface — too few for a client in
/// front of busy apps — and a proxy holds a descriptor per worker link. Returns the soft limit
/// before and after, or `None` when it already was the hard one.
pub fn raise_file_limit() -> Result<Option<(u64, u64)>, rustix::io::Errno> {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    let Some(soft) = limit.current else {
        return Ok(None);
    };
    let hard = limit.maximum.unwrap_or(UNLIMITED_FILES);
    if soft >= hard {
        return Ok(None);
    }
    limit.current = Some(hard);
    setrlimit(Resource::Nofile, limit)?;
    Ok(Some((soft, hard)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_is_configured_or_a_quarter_of_the_file_limit() {
        let derived = HttpLimits::default();
        assert_eq!(derived.connection_cap(Some(1024)), 256);
        assert_eq!(derived.connection_cap(Some(20)), MIN_CONNECTIONS);
        assert_eq!(derived.connection_cap(None), FALLBACK_CONNECTIONS);
        let configured = HttpLimits {
            max_connections: 7,
            ..HttpLimits::default()
        };
        assert_eq!(configured.connection_cap(Some(1024)), 7);
    }
}
