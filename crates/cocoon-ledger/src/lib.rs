//! cocoon-ledger
