//! cocoon-infer (work in progress)
