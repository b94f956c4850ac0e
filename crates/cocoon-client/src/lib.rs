//! cocoon-client
