//! The contracts' get-methods: what each returns, decoded from the API's stack into typed values.
//! Every decoder reads exactly the entries its get-method returns and checks each is in range, so a
//! stack from another contract or a lying API is a [`GetterError`], never a wrong number.

use tonlib_core::cell::TonCellError;
use tonlib_core::TonAddress;

use crate::api::{GetMethodResult, TonApi, TonApiError};
use crate::registry_cells::{RegistryLists, RegistryParams};
use crate::stack::{StackError, StackReader};

/// The most voucher keys a proxy contract honours (`MAX_VOUCHER_KEYS` of proxy.tolk).
pub const MAX_VOUCHER_KEYS: usize = 8;

/// Why a get-method gave no value to use.
#[derive(Debug, thiserror::Error)]
pub enum GetterError {
    /// The API failed.
    #[error(transparent)]
    Api(#[from] TonApiError),
    /// The account has no code (never deployed): TVM exit -13 as the API reports it.
    #[error("no contract at this address")]
    NotDeployed,
    /// The get-method failed.
    #[error("get-method {method} exited with {exit_code}")]
    Exit {
        /// The get-method.
        method: &'static str,
        /// Its exit code.
        exit_code: i32,
    },
    /// The stack is not what the get-method returns.
    #[error("get-method {method}: {reason}")]
    Malformed {
        /// The get-method.
        method: &'static str,
        /// What was wrong.
        reason: String,
    },
}

/// A contract's status (`uint2`: 0 closed, 1 open, 2 closing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Closed (or never opened).
    Closed,
    /// Open.
    Open,
    /// Closing until `release_at`.
    Closing,
}

impl Status {
    fn read(stack: &mut StackReader) -> Result<Self, StackError> {
        match stack.uint::<u8>()? {
            0 => Ok(Status::Closed),
            1 => Ok(Status::Open),
            2 => Ok(Status::Closing),
            _ => Err(StackError {
                index: 0,
                reason: "status is not 0, 1 or 2".into(),
            }),
        }
    }
}

/// `channel_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelState {
    /// Status.
    pub status: Status,
    /// When a close may finish (unix seconds; 0 unless closing).
    pub release_at: u32,
    /// Funds held, stake included.
    pub balance: u64,
    /// Locked part.
    pub stake: u64,
    /// Cumulative of the last applied `client_pay`.
    pub charged: u64,
    /// Moved to the proxy so far.
    pub collected: u64,
    /// Seqno of the last applied voucher.
    pub voucher_seqno: u64,
}

/// `channel_params`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelParams {
    /// The proxy contract.
    pub proxy: TonAddress,
    /// The client's wallet.
    pub owner: TonAddress,
    /// The client key.
    pub client_key: [u8; 32],
    /// Minimum stake.
    pub min_stake: u64,
    /// Close delay, seconds.
    pub close_delay: u32,
}

/// `proxy_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyState {
    /// Status.
    pub status: Status,
    /// When a close may finish.
    pub release_at: u32,
    /// The operator's stake.
    pub stake: u64,
    /// Collected client payments not yet paid out or withdrawn.
    pub pool: u64,
}

/// `proxy_params`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyParams {
    /// The operator's wallet.
    pub owner: TonAddress,
    /// The root.
    pub root: TonAddress,
    /// Minimum stake.
    pub min_stake: u64,
    /// Close delay, seconds.
    pub close_delay: u32,
}

/// `worker_paid(worker)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WorkerPaid {
    /// Paid so far.
    pub paid: u64,
    /// Seqno of the last applied voucher.
    pub voucher_seqno: u64,
}

/// Decodes `result` of get-method `method` with `read`, which must use every entry.
pub fn decode<T>(
    method: &'static str,
    result: &GetMethodResult,
    read: impl FnOnce(&mut StackReader) -> Result<T, StackError>,
) -> Result<T, GetterError> {
    match result.exit_code {
        0 | 1 => {}
        -13 => return Err(GetterError::NotDeployed),
        exit_code => return Err(GetterError::Exit { method, exit_code }),
    }
    let malformed = |reason: String| GetterError::Malformed { method, reason };
    let mut stack = StackReader::new(&result.stack).map_err(|e| malformed(e.to_string()))?;
    let value = read(&mut stack).map_err(|e| malformed(e.to_string()))?;
    if stack.remaining() != 0 {
        return Err(malformed(format!("{} entries too many", stack.remaining())));
    }
    Ok(value)
}

fn cell_error(error: TonCellError) -> StackError {
    StackError {
        index: 0,
        reason: error.to_string(),
    }
}

/// `channel_state` → (status, release_at, balance, stake, charged, collected, voucher_seqno).
pub fn channel_state(stack: &mut StackReader) -> Result<ChannelState, StackError> {
    Ok(ChannelState {
        status: Status::read(stack)?,
        release_at: stack.uint()?,
        balance: stack.uint()?,
        stake: stack.uint()?,
        charged: stack.uint()?,
        collected: stack.uint()?,
        voucher_seqno: stack.uint()?,
    })
}

/// `channel_params` → (proxy, owner, client_key, min_stake, close_delay).
pub fn channel_params(stack: &mut StackReader) -> Result<ChannelParams, StackError> {
    Ok(ChannelParams {
        proxy: stack.address()?,
        owner: stack.address()?,
        client_key: stack.uint256()?,
        min_stake: stack.uint()?,
        close_delay: stack.uint()?,
    })
}

/// `proxy_state` → (status, release_at, stake, pool).
pub fn proxy_state(stack: &mut StackReader) -> Result<ProxyState, StackError> {
    Ok(ProxyState {
        status: Status::read(stack)?,
        release_at: stack.uint()?,
        stake: stack.uint()?,
        pool: stack.uint()?,
    })
}

/// `proxy_params` → (owner, root, min_stake, close_delay).
pub fn proxy_params(stack: &mut StackReader) -> Result<ProxyParams, StackError> {
    Ok(ProxyParams {
        owner: stack.address()?,
        root: stack.address()?,
        min_stake: stack.uint()?,
        close_delay: stack.uint()?,
    })
}

/// `voucher_keys` → a tuple of at most [`MAX_VOUCHER_KEYS`] keys, oldest first.
pub fn voucher_keys(stack: &mut StackReader) -> Result<Vec<[u8; 32]>, StackError> {
    let mut tuple = stack.tuple(MAX_VOUCHER_KEYS)?;
    (0..tuple.remaining()).map(|_| tuple.uint256()).collect()
}

/// `worker_paid(worker)` → (paid, voucher_seqno).
pub fn worker_paid(stack: &mut StackReader) -> Result<WorkerPaid, StackError> {
    Ok(WorkerPaid {
        paid: stack.uint()?,
        voucher_seqno: stack.uint()?,
    })
}

/// `registry_version` → the version.
pub fn registry_version(stack: &mut StackReader) -> Result<u64, StackError> {
    stack.uint()
}

/// `registry_owner` → the owner's wallet.
pub fn registry_owner(stack: &mut StackReader) -> Result<TonAddress, StackError> {
    stack.address()
}

/// `registry_params` → the ten numbers of `RegistryParams`.
pub fn registry_params(stack: &mut StackReader) -> Result<RegistryParams, StackError> {
    Ok(RegistryParams {
        price_per_token: stack.uint()?,
        worker_fee_per_token: stack.uint()?,
        prompt_multiplier: stack.uint()?,
        cached_multiplier: stack.uint()?,
        completion_multiplier: stack.uint()?,
        reasoning_multiplier: stack.uint()?,
        client_delay_before_close: stack.uint()?,
        proxy_delay_before_close: stack.uint()?,
        min_client_stake: stack.uint()?,
        min_proxy_stake: stack.uint()?,
    })
}

/// `registry_lists` → the four dictionaries (null when empty).
pub fn registry_lists(stack: &mut StackReader) -> Result<RegistryLists, StackError> {
    let roots = [
        stack.maybe_cell()?,
        stack.maybe_cell()?,
        stack.maybe_cell()?,
        stack.maybe_cell()?,
    ];
    RegistryLists::from_roots(roots.each_ref().map(|root| root.as_deref())).map_err(cell_error)
}

/// `proxy_image_allowed(hash)`, `worker_image_allowed(hash)` → a boolean.
pub fn allowed(stack: &mut StackReader) -> Result<bool, StackError> {
    stack.bool()
}

/// An integer argument of a get-method, as the API takes it.
pub fn int_arg(bytes: &[u8; 32]) -> serde_json::Value {
    serde_json::json!(["num", format!("0x{}", hex::encode(bytes))])
}

/// Runs get-method `method` of `address` with `args` and decodes its stack with `read`.
pub async fn call<T>(
    api: &TonApi,
    address: &TonAddress,
    method: &'static str,
    args: &[serde_json::Value],
    read: impl FnOnce(&mut StackReader) -> Result<T, StackError>,
) -> Result<T, GetterError> {
    let result = api.run_get_method(address, method, args).await?;
    decode(method, &result, read)
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    fn result(stack: Value) -> GetMethodResult {
        GetMethodResult {
            exit_code: 0,
            stack: stack.as_array().unwrap().clone(),
        }
    }

    /// A `channel_params` answer as the devnet writes it (addresses as @ton/core BOCs of slices).
    const CHANNEL_PARAMS: &str = r#"[["slice",{"bytes":"te6cckEBAQEAJAAAQ4AGZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZnCLILwN"}],["slice",{"bytes":"te6cckEBAQEAJAAAQ4AIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiJDoWZyk"}],["num","0xaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"],["num","0x3b9aca00"],["num","0x258"]]"#;

    #[test]
    fn recorded_answers_decode() {
        let state = decode(
            "channel_state",
            &result(json!([
                ["num", "0x1"],
                ["num", "0x0"],
                ["num", "0x12a05f200"],
                ["num", "0x3b9aca00"],
                ["num", "0x4d2"],
                ["num", "0x4d2"],
                ["num", "0x7"]
            ])),
            channel_state,
        )
        .unwrap();
        assert_eq!(state.status, Status::Open);
        assert_eq!(state.balance, 5_000_000_000);
        assert_eq!(state.charged, 1234);
        assert_eq!(state.voucher_seqno, 7);

        let params = decode(
            "channel_params",
            &result(serde_json::from_str(CHANNEL_PARAMS).unwrap()),
            channel_params,
        )
        .unwrap();
        assert_eq!(params.proxy.to_hex(), format!("0:{}", "33".repeat(32)));
        assert_eq!(params.owner.to_hex(), format!("0:{}", "44".repeat(32)));
        assert_eq!(params.client_key, [0xaa; 32]);
        assert_eq!((params.min_stake, params.close_delay), (1_000_000_000, 600));

        let keys = decode(
            "voucher_keys",
            &result(json!([["tuple", {"elements": [["num", "0x1"], ["num", format!("0x{}", "ff".repeat(32))]]}]])),
            voucher_keys,
        )
        .unwrap();
        assert_eq!(keys[0][31], 1);
        assert_eq!(keys[1], [0xff; 32]);
        let none = decode(
            "voucher_keys",
            &result(json!([["tuple", {"elements": []}]])),
            voucher_keys,
        );
        assert_eq!(none.unwrap(), Vec::<[u8; 32]>::new());

        let lists = decode(
            "registry_lists",
            &result(json!([
                ["null", null],
                ["null", null],
                ["null", null],
                ["null", null]
            ])),
            registry_lists,
        )
        .unwrap();
        assert_eq!(lists, RegistryLists::default());
    }

    #[test]
    fn hostile_answers_are_typed_errors() {
        let malformed =
            |stack: Value, read: fn(&mut StackReader) -> Result<ProxyState, StackError>| {
                matches!(
                    decode("proxy_state", &result(stack), read),
                    Err(GetterError::Malformed { .. })
                )
            };
        // Too short, too long, a status of 3, a stake past u64, a cell where a number goes.
        assert!(malformed(
            json!([["num", "0x1"], ["num", "0x0"], ["num", "0x5"]]),
            proxy_state
        ));
        assert!(malformed(
            json!([
                ["num", "0x1"],
                ["num", "0x0"],
                ["num", "0x5"],
                ["num", "0x5"],
                ["num", "0x5"]
            ]),
            proxy_state
        ));
        assert!(malformed(
            json!([
                ["num", "0x3"],
                ["num", "0x0"],
                ["num", "0x5"],
                ["num", "0x5"]
            ]),
            proxy_state
        ));
        assert!(malformed(
            json!([
                ["num", "0x1"],
                ["num", "0x0"],
                ["num", "0x10000000000000000"],
                ["num", "0x5"]
            ]),
            proxy_state
        ));
        assert!(malformed(
            json!([
                ["null", null],
                ["num", "0x0"],
                ["num", "0x5"],
                ["num", "0x5"]
            ]),
            proxy_state
        ));
        let too_many_keys =
            json!([["tuple", {"elements": vec![json!(["num", "0x1"]); MAX_VOUCHER_KEYS + 1]}]]);
        assert!(matches!(
            decode("voucher_keys", &result(too_many_keys), voucher_keys),
            Err(GetterError::Malformed { .. })
        ));
        let undeployed = GetMethodResult {
            exit_code: -13,
            stack: vec![],
        };
        assert!(matches!(
            decode("proxy_state", &undeployed, proxy_state),
            Err(GetterError::NotDeployed)
        ));
        let failed = GetMethodResult {
            exit_code: 11,
            stack: vec![],
        };
        assert!(matches!(
            decode("proxy_state", &failed, proxy_state),
            Err(GetterError::Exit { exit_code: 11, .. })
        ));
    }
}
