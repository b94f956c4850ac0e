//! Accepting and serving connections under limits, for every port a Cocoon process listens on.
//!
//! - [`serve_http`]: a plain-HTTP surface (client API, stats, ledger, engines) with a connection
//!   cap, header, idle and body-read timeouts;
//! - [`listen`]: listening sockets whose backlog holds a burst of new connections;
//! - [`Accepting`]: an accept loop that survives running out of file descriptors;
//! - [`Slots`]: a cap on connections in some state (open, handshaking) that makes room by
//!   closing the longest-idle one (optionally sparing the young), so a flood of idle connections
//!   cannot starve a live one;
//! - [`LogThrottle`]: at most one warning per interval, counting the ones it held back;
//! - [`backoff`]: jittered exponential delays.
//!
//! The ledger serves through this crate too, which is why it stands apart from `cocoon-node`.

#![forbid(unsafe_code)]

mod accept;
pub mod backoff;
mod http;
mod limits;
mod listen;
mod slots;
mod throttle;

pub use accept::Accepting;
pub use http::serve_http;
pub use limits::{file_limit, raise_file_limit, HttpLimits};
pub use listen::{listen, LISTEN_BACKLOG};
pub use slots::{Admission, Busy, Slot, Slots};
pub use throttle::LogThrottle;
