//! cocoon-worker
