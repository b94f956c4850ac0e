//! Mutation fuzzing of every decoder that reads bytes from a peer.
//!
//! Each [`Target`] names a decoder, gives real inputs as seeds (an RA-TLS certificate, a TDX quote,
//! a receipt, a ledger transaction, an engine's SSE stream, …) and a function that feeds it one
//! input. [`fuzz`] mutates the seeds (bit flips, byte overwrites with boundary values, truncation,
//! insertion, duplication of spans, splicing two seeds), runs the decoder on each result and
//! records every panic as a [`Finding`]. Decoders must refuse bad input with an error; a panic is a
//! defect, since a peer could send that input.
//!
//! `cargo test -p cocoon-fuzz` runs every target briefly; `cargo run --release -p cocoon-fuzz --
//! --cases 1000000` runs them long (see `scripts/fuzz.sh`).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod mutate;
pub mod targets;

use std::cell::{Cell, RefCell};
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

use rand::rngs::StdRng;
use rand::SeedableRng;

/// One decoder under test.
pub struct Target {
    /// Short name, used on the command line.
    pub name: &'static str,
    /// Real inputs the mutations start from.
    pub seeds: fn() -> Vec<Vec<u8>>,
    /// Feeds one input to the decoder; must not panic, whatever the input.
    pub run: fn(&[u8]),
    /// What the seeds are, so mutations can keep most inputs well-formed.
    pub format: Format,
}

/// The shape of a target's inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Binary or text without a structure the mutator knows.
    Bytes,
    /// JSON: values are mutated in place as well as bytes.
    Json,
}

/// An input that made a decoder panic.
#[derive(Debug, Clone)]
pub struct Finding {
    /// The input, as bytes.
    pub input: Vec<u8>,
    /// The panic's message.
    pub message: String,
}

/// What one fuzzing run of a target did.
#[derive(Debug, Clone)]
pub struct Report {
    /// The target's name.
    pub target: &'static str,
    /// How many inputs were run (seeds included).
    pub executions: u64,
    /// Inputs that panicked (at most [`MAX_FINDINGS`] kept).
    pub findings: Vec<Finding>,
    /// How many inputs panicked in all.
    pub panics: u64,
}

/// How many panicking inputs a report keeps.
pub const MAX_FINDINGS: usize = 16;

thread_local! {
    /// Whether this thread is running fuzz inputs (its panics are findings, not crashes).
    static CAPTURING: Cell<bool> = const { Cell::new(false) };
    /// The message of this thread's last captured panic.
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Installs, once per process, a panic hook that keeps the panics of fuzzing threads quiet and
/// records their messages, and passes every other panic to the previous hook.
fn install_panic_hook() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if CAPTURING.with(Cell::get) {
                let message = match info.location() {
                    Some(at) => format!("{info} ({at})"),
                    None => info.to_string(),
                };
                LAST_PANIC.with(|last| *last.borrow_mut() = Some(message));
            } else {
                previous(info);
            }
        }));
    });
}

/// Runs `target` on its seeds and then on `cases` mutated inputs drawn with `rng_seed`.
pub fn fuzz(target: &Target, cases: u64, rng_seed: u64) -> Report {
    let seeds = (target.seeds)();
    assert!(!seeds.is_empty(), "target {} has no seeds", target.name);
    let mut rng = StdRng::seed_from_u64(rng_seed);
    let mut report = Report {
        target: target.name,
        executions: 0,
        findings: Vec::new(),
        panics: 0,
    };
    install_panic_hook();
    CAPTURING.with(|c| c.set(true));
    let run_one = |input: Vec<u8>, report: &mut Report| {
        report.executions += 1;
        if panic::catch_unwind(AssertUnwindSafe(|| (target.run)(&input))).is_err() {
            report.panics += 1;
            if report.findings.len() < MAX_FINDINGS {
                let message = LAST_PANIC
                    .with(|last| last.borrow_mut().take())
                    .unwrap_or_default();
                report.findings.push(Finding { input, message });
            }
        }
    };
    for seed in &seeds {
        run_one(seed.clone(), &mut report);
    }
    for _ in 0..cases {
        let input = match target.format {
            Format::Bytes => mutate::mutated(&mut rng, &seeds),
            Format::Json => mutate::mutated_json(&mut rng, &seeds),
        };
        run_one(input, &mut report);
    }
    CAPTURING.with(|c| c.set(false));
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicking_decoder_is_a_finding_and_the_run_goes_on() {
        let target = Target {
            name: "panics-on-x",
            seeds: || vec![b"abc".to_vec()],
            run: |bytes| assert!(!bytes.contains(&b'x'), "found an x"),
            format: Format::Bytes,
        };
        let report = fuzz(&target, 5_000, 3);
        assert_eq!(report.executions, 5_001);
        assert!(report.panics > 0, "no mutation put an x in");
        assert!(report.findings.len() <= MAX_FINDINGS);
        let finding = &report.findings[0];
        assert!(finding.input.contains(&b'x'));
        assert!(
            finding.message.contains("found an x"),
            "{}",
            finding.message
        );
    }

    #[test]
    fn a_sound_decoder_has_no_findings() {
        let target = Target {
            name: "parses-json",
            seeds: || vec![br#"{"a":[1,2,{"b":null}]}"#.to_vec()],
            run: |bytes| {
                let _ = serde_json::from_slice::<serde_json::Value>(bytes);
            },
            format: Format::Json,
        };
        let report = fuzz(&target, 2_000, 4);
        assert_eq!((report.panics, report.findings.len()), (0, 0));
    }
}
