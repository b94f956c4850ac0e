//! The root contract's registry as cells: `RegistryParams` (ten numbers) and `RegistryLists` (four
//! dictionaries), built for `update_registry` and the root's initial data, and read back from the
//! root's get-methods. Reading is of hostile cells: every malformed part is a [`TonCellError`].

use std::collections::HashMap;
use std::sync::Arc;

use num_bigint::BigUint;
use tonlib_core::cell::{ArcCell, Cell, CellBuilder, CellParser, TonCellError};
use tonlib_core::TonAddress;

/// The most bytes a name or endpoint takes: one cell (`^bytes` is one cell, not a snake).
pub const MAX_TEXT_BYTES: usize = 127;

/// `RegistryParams` of root.tolk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RegistryParams {
    /// Client price per token (nano-TON).
    pub price_per_token: u64,
    /// Worker pay per token.
    pub worker_fee_per_token: u64,
    /// Per 10 000.
    pub prompt_multiplier: u32,
    /// Per 10 000.
    pub cached_multiplier: u32,
    /// Per 10 000.
    pub completion_multiplier: u32,
    /// Per 10 000.
    pub reasoning_multiplier: u32,
    /// Seconds.
    pub client_delay_before_close: u32,
    /// Seconds.
    pub proxy_delay_before_close: u32,
    /// nano-TON.
    pub min_client_stake: u64,
    /// nano-TON.
    pub min_proxy_stake: u64,
}

impl RegistryParams {
    /// The cell.
    pub fn cell(&self) -> Result<Cell, TonCellError> {
        CellBuilder::new()
            .store_u64(64, self.price_per_token)?
            .store_u64(64, self.worker_fee_per_token)?
            .store_u32(32, self.prompt_multiplier)?
            .store_u32(32, self.cached_multiplier)?
            .store_u32(32, self.completion_multiplier)?
            .store_u32(32, self.reasoning_multiplier)?
            .store_u32(32, self.client_delay_before_close)?
            .store_u32(32, self.proxy_delay_before_close)?
            .store_u64(64, self.min_client_stake)?
            .store_u64(64, self.min_proxy_stake)?
            .build()
    }

    /// Reads the cell (as `update_registry` carries it).
    pub fn from_cell(cell: &Cell) -> Result<Self, TonCellError> {
        let mut p = cell.parser();
        Ok(RegistryParams {
            price_per_token: p.load_u64(64)?,
            worker_fee_per_token: p.load_u64(64)?,
            prompt_multiplier: p.load_u32(32)?,
            cached_multiplier: p.load_u32(32)?,
            completion_multiplier: p.load_u32(32)?,
            reasoning_multiplier: p.load_u32(32)?,
            client_delay_before_close: p.load_u32(32)?,
            proxy_delay_before_close: p.load_u32(32)?,
            min_client_stake: p.load_u64(64)?,
            min_proxy_stake: p.load_u64(64)?,
        })
    }
}

/// A proxy the registry lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedProxy {
    /// Registration seqno (the dictionary's key).
    pub seqno: u64,
    /// The proxy contract.
    pub address: TonAddress,
    /// `host:port` workers dial.
    pub worker_endpoint: String,
    /// `host:port` clients dial.
    pub client_endpoint: String,
}

/// `RegistryLists` of root.tolk, sorted by key (the order dictionaries give).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RegistryLists {
    /// Allowed proxy image hashes.
    pub proxy_images: Vec<[u8; 32]>,
    /// Allowed worker image hashes.
    pub worker_images: Vec<[u8; 32]>,
    /// Allowed models: (model hash, name).
    pub models: Vec<([u8; 32], String)>,
    /// Registered proxies.
    pub proxies: Vec<ListedProxy>,
}

fn bytes_cell(text: &str) -> Result<ArcCell, TonCellError> {
    if text.len() > MAX_TEXT_BYTES {
        return Err(TonCellError::CellBuilderError(format!(
            "{text:?}: longer than {MAX_TEXT_BYTES} bytes"
        )));
    }
    Ok(Arc::new(
        CellBuilder::new().store_slice(text.as_bytes())?.build()?,
    ))
}

fn read_text(cell: &Cell) -> Result<String, TonCellError> {
    if cell.bit_len() % 8 != 0 {
        return Err(TonCellError::CellParserError(
            "text is not whole bytes".into(),
        ));
    }
    String::from_utf8(cell.data().to_vec())
        .map_err(|_| TonCellError::CellParserError("text is not UTF-8".into()))
}

fn store_flag(builder: &mut CellBuilder, value: bool) -> Result<(), TonCellError> {
    builder.store_bit(value)?;
    Ok(())
}

fn store_ref(builder: &mut CellBuilder, value: ArcCell) -> Result<(), TonCellError> {
    builder.store_reference(&value)?;
    Ok(())
}

fn key_bytes(key: &BigUint) -> Result<[u8; 32], TonCellError> {
    let raw = key.to_bytes_be();
    let mut out = [0; 32];
    let start = 32usize
        .checked_sub(raw.len())
        .ok_or_else(|| TonCellError::CellParserError("key longer than 256 bits".into()))?;
    out[start..].copy_from_slice(&raw);
    Ok(out)
}

fn read_flag(parser: &mut CellParser) -> Result<bool, TonCellError> {
    parser.load_bit()
}

fn read_ref(parser: &mut CellParser) -> Result<ArcCell, TonCellError> {
    parser.next_reference()
}

fn image_dict(hashes: &[[u8; 32]]) -> HashMap<BigUint, bool> {
    hashes
        .iter()
        .map(|hash| (BigUint::from_bytes_be(hash), true))
        .collect()
}

fn read_images(root: Option<&Cell>) -> Result<Vec<[u8; 32]>, TonCellError> {
    let Some(root) = root else {
        return Ok(Vec::new());
    };
    let dict = root
        .parser()
        .load_dict_data(256, key_bytes_reader, read_flag)?;
    let mut out: Vec<_> = dict.into_keys().collect();
    out.sort();
    Ok(out)
}

fn key_bytes_reader(key: &BigUint) -> Result<[u8; 32], TonCellError> {
    key_bytes(key)
}

fn seqno_reader(key: &BigUint) -> Result<u64, TonCellError> {
    u64::try_from(key).map_err(|_| TonCellError::CellParserError("seqno past 64 bits".into()))
}

impl RegistryLists {
    /// The cell (four `HashmapE`s).
    pub fn cell(&self) -> Result<Cell, TonCellError> {
        let models = self
            .models
            .iter()
            .map(|(hash, name)| Ok((BigUint::from_bytes_be(hash), bytes_cell(name)?)))
            .collect::<Result<HashMap<_, _>, TonCellError>>()?;
        let proxies = self
            .proxies
            .iter()
            .map(|p| {
                let entry = CellBuilder::new()
                    .store_raw_address(&p.address)?
                    .store_reference(&bytes_cell(&p.worker_endpoint)?)?
                    .store_reference(&bytes_cell(&p.client_endpoint)?)?
                    .build()?;
                Ok((BigUint::from(p.seqno), Arc::new(entry)))
            })
            .collect::<Result<HashMap<_, _>, TonCellError>>()?;
        CellBuilder::new()
            .store_dict(256, store_flag, image_dict(&self.proxy_images))?
            .store_dict(256, store_flag, image_dict(&self.worker_images))?
            .store_dict(256, store_ref, models)?
            .store_dict(64, store_ref, proxies)?
            .build()
    }

    /// Reads the cell (four `HashmapE`s, as `update_registry` carries it).
    pub fn from_cell(cell: &Cell) -> Result<Self, TonCellError> {
        let mut parser = cell.parser();
        let roots = [
            parser.load_maybe_cell_ref()?,
            parser.load_maybe_cell_ref()?,
            parser.load_maybe_cell_ref()?,
            parser.load_maybe_cell_ref()?,
        ];
        Self::from_roots(roots.each_ref().map(|root| root.as_deref()))
    }

    /// The lists from the four dictionaries' roots (`None`: empty), as `registry_lists` answers.
    pub fn from_roots(roots: [Option<&Cell>; 4]) -> Result<Self, TonCellError> {
        let [proxy_images, worker_images, models, proxies] = roots;
        let mut models: Vec<_> = match models {
            Some(root) => root
                .parser()
                .load_dict_data(256, key_bytes_reader, read_ref)?
                .into_iter()
                .map(|(hash, name)| Ok((hash, read_text(&name)?)))
                .collect::<Result<_, TonCellError>>()?,
            None => Vec::new(),
        };
        models.sort();
        let mut proxies: Vec<_> = match proxies {
            Some(root) => root
                .parser()
                .load_dict_data(64, seqno_reader, read_ref)?
                .into_iter()
                .map(|(seqno, entry)| {
                    let mut parser = entry.parser();
                    Ok(ListedProxy {
                        seqno,
                        address: parser.load_address()?,
                        worker_endpoint: read_text(parser.next_reference()?.as_ref())?,
                        client_endpoint: read_text(parser.next_reference()?.as_ref())?,
                    })
                })
                .collect::<Result<_, TonCellError>>()?,
            None => Vec::new(),
        };
        proxies.sort_by_key(|p| p.seqno);
        Ok(Self {
            proxy_images: read_images(proxy_images)?,
            worker_images: read_images(worker_images)?,
            models,
            proxies,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::messages::tests::{address, js_hash, js_vectors};

    pub(crate) fn sample_params() -> RegistryParams {
        RegistryParams {
            price_per_token: 1000,
            worker_fee_per_token: 800,
            prompt_multiplier: 10_000,
            cached_multiplier: 1_000,
            completion_multiplier: 10_000,
            reasoning_multiplier: 9_000,
            client_delay_before_close: 600,
            proxy_delay_before_close: 3600,
            min_client_stake: 1_000_000_000,
            min_proxy_stake: 10_000_000_000,
        }
    }

    pub(crate) fn sample_lists() -> RegistryLists {
        RegistryLists {
            proxy_images: vec![[0xa1; 32]],
            worker_images: vec![[0xb1; 32], [0xb2; 32]],
            models: vec![([0xc1; 32], "qwen3-0.6b".into())],
            proxies: vec![ListedProxy {
                seqno: 3,
                address: address(0x33),
                worker_endpoint: "proxy.example:9000".into(),
                client_endpoint: "proxy.example:8443".into(),
            }],
        }
    }

    #[test]
    fn params_and_lists_are_the_cells_the_js_wrappers_build() {
        let vectors = js_vectors();
        assert_eq!(
            sample_params().cell().unwrap().cell_hash().as_slice(),
            js_hash(&vectors["registry_params"])
        );
        assert_eq!(
            sample_lists().cell().unwrap().cell_hash().as_slice(),
            js_hash(&vectors["registry_lists"])
        );
    }

    #[test]
    fn lists_read_back_from_their_dictionaries() {
        let lists = sample_lists();
        let back = RegistryLists::from_cell(&lists.cell().unwrap()).unwrap();
        let params = RegistryParams::from_cell(&sample_params().cell().unwrap()).unwrap();
        assert_eq!(params, sample_params());
        assert_eq!(back, lists);
        assert_eq!(
            RegistryLists::from_roots([None; 4]).unwrap(),
            RegistryLists::default()
        );
    }

    #[test]
    fn the_zero_address_is_stored_whole_as_the_js_wrappers_store_it() {
        // tonlib's store_address shortens 0:00…0 to addr_none (2 bits); the contracts and the JS
        // wrappers always store addr_std (267 bits), so a listed proxy at the zero address (what
        // the rules' registry, which names no proxy contract, becomes) must be stored whole.
        let lists = RegistryLists {
            proxies: vec![ListedProxy {
                seqno: 1,
                address: TonAddress::NULL,
                worker_endpoint: "w".into(),
                client_endpoint: "c".into(),
            }],
            ..RegistryLists::default()
        };
        let cell = lists.cell().unwrap();
        let mut parser = cell.parser();
        for _ in 0..3 {
            parser.load_maybe_cell_ref().unwrap();
        }
        let root = parser.load_maybe_cell_ref().unwrap().unwrap();
        let proxies = root
            .parser()
            .load_dict_data(64, seqno_reader, read_ref)
            .unwrap();
        assert_eq!(proxies[&1].bit_len(), 2 + 1 + 8 + 256);
        let back = RegistryLists::from_roots([None, None, None, Some(&root)]).unwrap();
        assert_eq!(back, lists);
    }

    #[test]
    fn hostile_lists_are_errors() {
        let too_long = RegistryLists {
            models: vec![([1; 32], "m".repeat(MAX_TEXT_BYTES + 1))],
            ..RegistryLists::default()
        };
        assert!(too_long.cell().is_err());
        // A dictionary root that is not a dictionary, and a model name that is not UTF-8.
        let junk = CellBuilder::new()
            .store_u8(3, 0b101)
            .unwrap()
            .build()
            .unwrap();
        assert!(RegistryLists::from_roots([Some(&junk), None, None, None]).is_err());
        let bad_name = Arc::new(
            CellBuilder::new()
                .store_slice(&[0xff, 0xfe])
                .unwrap()
                .build()
                .unwrap(),
        );
        let models = CellBuilder::new()
            .store_dict(
                256,
                store_ref,
                HashMap::from([(BigUint::from(1u8), bad_name)]),
            )
            .unwrap()
            .build()
            .unwrap();
        let root = models.parser().load_maybe_cell_ref().unwrap().unwrap();
        assert!(RegistryLists::from_roots([None, None, Some(&root), None]).is_err());
    }
}
