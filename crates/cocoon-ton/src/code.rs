//! The compiled code of the Cocoon contracts (`contracts/src/*.tolk`), embedded so the Rust build
//! needs no Node: `contracts/build/<name>.boc` and its hex code hash `<name>.hash`, both committed
//! and kept current by `npm run build` (`npm test` fails when the sources compile to other code;
//! the test below fails when a BOC and its hash disagree).

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
    /// The code cell.
    pub fn cell(&self) -> Result<ArcCell, TonCellError> {
        BagOfCells::parse(self.boc)?.single_root()
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
