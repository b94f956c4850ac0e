//! What the proxy checks in a client's request before anything is reserved: the model, the
//! completion-token limit by the rule every hop applies ([`completion_limit`]), and the engine
//! parameters the client says it uses, so that an impossible request is answered 400 naming the
//! parameter, never as a shortage of funds.

use cocoon_money::PricingError;
use cocoon_proto::capabilities::parse_engine_params;
use cocoon_proto::choices::PromptCount;
use cocoon_proto::headers::ENGINE_PARAMS;
use cocoon_proto::{completion_limit, ChoiceFields, ErrorKind, OpenAiError, TokenField};
use http::HeaderMap;
use serde::Deserialize;

use crate::billing;
use crate::routing::Needs;

/// The fields of a request the proxy reads; the body is forwarded unchanged.
#[derive(Deserialize)]
pub(crate) struct RoutedFields {
    pub model: Option<serde_json::Value>,
    #[serde(default)]
    max_tokens: TokenField,
    #[serde(default)]
    max_completion_tokens: TokenField,
    #[serde(default)]
    n: TokenField,
    #[serde(default)]
    best_of: TokenField,
    #[serde(default)]
    prompt: PromptCount,
}

/// The completion tokens to reserve for a request: its own limit (by the one rule every hop
/// applies), or `default` when it sets none, for each sequence generated (`n` or `best_of` × prompts).
pub(crate) fn reserved_completion_tokens(
    fields: &RoutedFields,
    default: u64,
) -> Result<u64, OpenAiError> {
    let per_choice = completion_limit(fields.max_tokens, fields.max_completion_tokens)
        .map_err(|error| invalid_request(error.param(), error.to_string()))?
        .unwrap_or(default);
    let choices = ChoiceFields {
        n: fields.n,
        best_of: fields.best_of,
        prompt: fields.prompt,
    }
    .choices()
    .map_err(|error| invalid_request(error.param(), error.to_string()))?;
    Ok(per_choice.saturating_mul(choices))
}

/// What the request needs of a worker: the engine parameters its client listed (a client that
/// lists fewer than it uses only meets the engine's own refusal) and its own token limit.
pub(crate) fn request_needs(
    fields: &RoutedFields,
    headers: &HeaderMap,
) -> Result<Needs, OpenAiError> {
    let params = match headers.get(ENGINE_PARAMS) {
        None => Vec::new(),
        Some(value) => value
            .to_str()
            .ok()
            .and_then(parse_engine_params)
            .ok_or_else(|| {
                OpenAiError::new(
                    ErrorKind::InvalidRequest,
                    format!("`{ENGINE_PARAMS}` is not a short list of parameter names"),
                )
            })?,
    };
    let max_tokens = completion_limit(fields.max_tokens, fields.max_completion_tokens)
        .map_err(|error| invalid_request(error.param(), error.to_string()))?;
    Ok(Needs { params, max_tokens })
}

/// A request refused before any reservation, naming the parameter at fault.
pub(crate) fn invalid_request(param: &str, message: String) -> OpenAiError {
    OpenAiError::new(ErrorKind::InvalidRequest, message).with_param(param)
}

/// The answer to a refused reservation: a worst case too large to price is the request's fault
/// (400 naming `max_tokens`); anything else is billing's verdict (402, 503…).
pub(crate) fn refused_reservation(error: &billing::BillingError, max_tokens: u64) -> OpenAiError {
    match error {
        billing::BillingError::Pricing(PricingError::Overflow) => invalid_request(
            "max_tokens",
            format!("the worst case of {max_tokens} completion tokens overflows its price"),
        ),
        error => OpenAiError::new(error.kind(), error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cocoon_money::Prices;
    use cocoon_proto::ErrorKind;

    fn fields(json: &str) -> RoutedFields {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn deeply_nested_input_is_refused_or_skipped_without_exhausting_the_stack() {
        // A client node can send any body, nested far beyond any stack. What the proxy skips
        // (messages, a prompt's entries, a non-number limit, recorded as invalid for a 400
        // later) serde_json skips without recursing; the model, read as a value, hits its
        // depth limit. Reaching the end of this test is the property: no stack overflow.
        let deep = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        for field in ["messages", "prompt", "n", "max_tokens"] {
            let body = format!(r#"{{"model":"m","{field}":{}}}"#, deep(1_000_000));
            let _ = serde_json::from_str::<RoutedFields>(&body);
        }
        let model = format!(r#"{{"model":{}}}"#, deep(1_000_000));
        assert!(serde_json::from_str::<RoutedFields>(&model).is_err());
    }

    #[test]
    fn the_reserved_limit_is_the_one_every_hop_enforces() {
        assert_eq!(reserved_completion_tokens(&fields("{}"), 256), Ok(256));
        assert_eq!(
            reserved_completion_tokens(&fields(r#"{"max_completion_tokens":9}"#), 256),
            Ok(9)
        );
        // Reserved by one field, served by the other: refused, not reserved by the smaller.
        let poisoned = fields(r#"{"max_completion_tokens":1,"max_tokens":1000}"#);
        assert_eq!(
            reserved_completion_tokens(&poisoned, 256)
                .unwrap_err()
                .error
                .param
                .as_deref(),
            Some("max_completion_tokens")
        );
        // Every choice may use the whole limit: n × prompts of them are reserved.
        assert_eq!(
            reserved_completion_tokens(&fields(r#"{"max_tokens":9,"n":3}"#), 256),
            Ok(27)
        );
        assert_eq!(
            reserved_completion_tokens(&fields(r#"{"prompt":["a","b"],"n":2}"#), 256),
            Ok(1024)
        );
        // `best_of` sequences are generated (and billed) to return `n`: all are reserved.
        assert_eq!(
            reserved_completion_tokens(&fields(r#"{"max_tokens":9,"n":1,"best_of":4}"#), 256),
            Ok(36)
        );
        for (json, param) in [
            (r#"{"n":0}"#, "n"),
            (r#"{"n":1000}"#, "n"),
            (r#"{"max_tokens":9223372036854775808}"#, "max_tokens"),
            (r#"{"max_tokens":-3}"#, "max_tokens"),
            (
                r#"{"max_completion_tokens":{"a":1}}"#,
                "max_completion_tokens",
            ),
        ] {
            let error = reserved_completion_tokens(&fields(json), 256).unwrap_err();
            assert_eq!(error.error.param.as_deref(), Some(param), "{json}");
        }
    }

    #[test]
    fn needs_come_from_the_header_and_the_limit() {
        let mut headers = HeaderMap::new();
        let needs_of = |json: &str, headers: &HeaderMap| request_needs(&fields(json), headers);
        assert_eq!(needs_of("{}", &headers).unwrap(), Needs::default());
        headers.insert(ENGINE_PARAMS, "tools,n".parse().unwrap());
        let read = needs_of(r#"{"max_tokens":9}"#, &headers).unwrap();
        assert_eq!(read.params, ["tools", "n"]);
        assert_eq!(read.max_tokens, Some(9));
        for hostile in ["tools;drop", "a,,b", "\u{e9}"] {
            headers.insert(ENGINE_PARAMS, hostile.parse().unwrap());
            let error = needs_of("{}", &headers).unwrap_err();
            assert_eq!(error.kind(), Some(ErrorKind::InvalidRequest), "{hostile}");
        }
    }

    #[test]
    fn a_worst_case_that_overflows_its_price_is_a_bad_request_not_a_lack_of_funds() {
        let prices = Prices {
            price_per_token: u64::MAX / 2,
            ..Prices::default()
        };
        let overflow = cocoon_money::worst_case_cost(10, 1 << 24, u32::MAX, &prices).unwrap_err();
        let error = refused_reservation(&billing::BillingError::Pricing(overflow), 1 << 24);
        assert_eq!(error.kind(), Some(ErrorKind::InvalidRequest));
        assert_eq!(error.error.param.as_deref(), Some("max_tokens"));
        let unpaid = refused_reservation(&billing::BillingError::NoWallet, 5);
        assert_eq!(unpaid.kind(), Some(ErrorKind::InsufficientQuota));
    }
}
