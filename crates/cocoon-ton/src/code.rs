//! The compiled code of the Cocoon contracts (`contracts/src/*.tolk`), embedded so the Rust build
//! needs no Node: `contracts/build/<name>.boc` and its hex code hash `<name>.hash`, both committed
//! and kept current by `npm run build` (`npm test` fails when the sources compile to other code;
//! the test below fails when a BOC and its hash disagree).

use std::collections::BTreeMap;
use std::sync::Mutex;

use tonlib_core::cell::{ArcCell, BagOfCells, TonCellError};

/// One contract's committed code.
#[derive(Debug, Clone, Copy)]
pub struct ContractCode {
    /// The contract's name (its source is `contracts/src/<name>.tolk`).
    pub name: &'static str,
    /// The code as a bag of cells.
    pub boc: &'static [u8],
    /// The code cell's representation hash, lowercase hex, as committed.
    pub hash_hex: &'static str,
}

impl ContractCode {
    /// The code cell, parsed once per process: every contract address is a hash over it, and
    /// nodes derive addresses for each voucher they sign or check (a parse costs ~14 µs). Kept by
    /// the address of the embedded bytes, which are `'static`.
    pub fn cell(&self) -> Result<ArcCell, TonCellError> {
        static PARSED: Mutex<BTreeMap<(usize, usize), ArcCell>> = Mutex::new(BTreeMap::new());
        let key = (self.boc.as_ptr() as usize, self.boc.len());
        // A map of parsed cells, each inserted whole: a panic elsewhere cannot leave it torn.
        let mut parsed = PARSED.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(cell) = parsed.get(&key) {
            return Ok(cell.clone());
        }
        let cell = BagOfCells::parse(self.boc)?.single_root()?;
        parsed.insert(key, cell.clone());
        Ok(cell)
    }
}

macro_rules! contract_code {
    ($name:literal) => {
        ContractCode {
            name: $name,
            boc: include_bytes!(concat!("../../../contracts/build/", $name, ".boc")),
            hash_hex: include_str!(concat!("../../../contracts/build/", $name, ".hash")),
        }
    };
}

/// The client × proxy channel.
pub const CLIENT_CHANNEL: ContractCode = contract_code!("client_channel");
/// The proxy contract.
pub const PROXY: ContractCode = contract_code!("proxy");
/// The root (registry).
pub const ROOT: ContractCode = contract_code!("root");

/// Every contract, in the order `contracts/build.js` builds them.
pub const ALL: [ContractCode; 3] = [CLIENT_CHANNEL, PROXY, ROOT];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_embedded_boc_has_its_committed_code_hash() {
        for code in ALL {
            let cell = code.cell().unwrap_or_else(|e| panic!("{}: {e}", code.name));
            assert_eq!(
                hex::encode(cell.cell_hash().as_slice()),
                code.hash_hex.trim(),
                "{}: build/{}.hash does not match build/{}.boc (run npm run build in contracts/)",
                code.name,
                code.name,
                code.name
            );
        }
    }

    #[test]
    fn each_code_cell_is_parsed_once_and_is_the_committed_cell() {
        for code in ALL {
            let first = code.cell().unwrap();
            let again = code.cell().unwrap();
            assert!(std::sync::Arc::ptr_eq(&first, &again), "{}", code.name);
            let fresh = BagOfCells::parse(code.boc).unwrap().single_root().unwrap();
            assert_eq!(first.cell_hash(), fresh.cell_hash(), "{}", code.name);
        }
        // Distinct contracts keep distinct cells.
        assert_ne!(
            PROXY.cell().unwrap().cell_hash(),
            ROOT.cell().unwrap().cell_hash()
        );
    }

    #[test]
    fn a_truncated_boc_is_an_error_not_a_panic() {
        for code in ALL {
            for len in [0, 1, code.boc.len() / 2, code.boc.len() - 1] {
                assert!(BagOfCells::parse(&code.boc[..len])
                    .and_then(BagOfCells::single_root)
                    .is_err());
            }
        }
    }
}
