//! Names of the `x-cocoon-*` headers and trailers that carry request metadata across links.
//!
//! Request metadata rides in headers so that bodies stay the engine's own (OpenAI JSON or SSE) and
//! no hop needs to re-frame them; the final token usage rides in trailers because it is known only
//! after the last byte of a stream.

/// Request header: a caller-chosen id, echoed in logs of every hop.
pub const REQUEST_ID: &str = "x-cocoon-request-id";
/// Request header: the highest worker price coefficient the client accepts (1000 = 1.0×).
pub const MAX_COEFFICIENT: &str = "x-cocoon-max-coefficient";
/// Request header: the whole request's deadline in milliseconds, measured from its arrival.
pub const TIMEOUT_MS: &str = "x-cocoon-timeout-ms";
/// Request header from the client to the proxy: the engine parameters the request uses
/// (comma-separated names, see [`crate::capabilities`]); the proxy routes it only to a worker
/// whose engine honours them all.
pub const ENGINE_PARAMS: &str = "x-cocoon-engine-params";
/// Request header from the proxy to the worker: the completion tokens reserved for the request,
/// all its choices together ([`crate::choices`]). The worker asks its engine for no more and
/// relays no more, whatever the engine does.
pub const MAX_TOKENS: &str = "x-cocoon-max-tokens";
/// Response header, on a worker's 5xx answer: the request reached no engine, so another worker may
/// be given it. A 5xx without it means the engine had the request (which may be what broke it):
/// the proxy does not retry it elsewhere.
pub const NOT_PROCESSED: &str = "x-cocoon-not-processed";
/// Response header: the coefficient of the worker that serves the request.
pub const COEFFICIENT: &str = "x-cocoon-coefficient";
/// Response header: hex image hash of the worker's attested TEE image.
pub const WORKER_IMAGE: &str = "x-cocoon-worker-image";
/// Response header: hex SHA-256 of the model the worker serves.
pub const MODEL_HASH: &str = "x-cocoon-model-hash";
/// Trailer: the request's [`TokenUsage`](crate::TokenUsage) as JSON, sent by the worker.
pub const USAGE: &str = "x-cocoon-usage";
/// Trailer: an [`OpenAiError`](crate::OpenAiError) as JSON, when a stream failed after its headers.
pub const ERROR: &str = "x-cocoon-error";
/// Request header from the proxy to the worker: the prices the answer will be
/// billed at, as JSON, so the worker's receipt states the same charge.
pub const PRICES: &str = "x-cocoon-prices";
/// Response header of a non-streamed answer at the client: the answer's full receipt, base64url
/// (no padding) of its JSON.
pub const RECEIPT: &str = "x-cocoon-receipt";
/// Trailer: an answer's signed receipt record (base64url JSON) — the worker's half from the
/// worker, the countersigned one from the proxy. The certificates ride in the two trailers below.
/// They repeat on every answer of a link, but HTTP/2 header compression sends a repeat as an index
/// only while it fits h2's encoder table (4 KiB, and no entry over 3 KiB): `fake` certificates
/// (~1.3 KB) do; a TDX one (~7.5 KB with its quote) travels whole on every answer.
pub const RECEIPT_RECORD: &str = "x-cocoon-receipt-record";
/// Trailer: the certificate (base64 DER) whose key made the worker's receipt signature.
pub const RECEIPT_WORKER_CERTIFICATE: &str = "x-cocoon-receipt-worker-certificate";
/// Trailer from the proxy: the certificate (base64 DER) whose key made its countersignature.
pub const RECEIPT_PROXY_CERTIFICATE: &str = "x-cocoon-receipt-proxy-certificate";
/// Request header, proxy → worker and client → proxy: SHA-256 (hex) of the peer's link
/// certificate, sent once the sender holds that certificate's text from an earlier receipt on the
/// link. While the peer signs with that certificate it leaves its certificate trailer out
/// ([`RECEIPT_WORKER_CERTIFICATE`], [`RECEIPT_PROXY_CERTIFICATE`]) and the sender fills it in: a
/// TDX certificate (~7.5 KB) is too large for HTTP/2 header compression to send as an index, so
/// it would otherwise cross the link whole with every answer.
pub const HELD_CERTIFICATE: &str = "x-cocoon-held-certificate";
/// Request header from the client to the proxy: the SHA-256s (hex, comma-separated, at most
/// [`MAX_HELD_WORKER_CERTIFICATES`]) of workers' link certificates the client holds from earlier
/// receipts on this link. The proxy then sends a receipt of one of those workers with
/// [`RECEIPT_WORKER_CERTIFICATE_SHA256`] instead of the certificate.
pub const HELD_WORKER_CERTIFICATES: &str = "x-cocoon-held-worker-certificates";
/// The most digests [`HELD_WORKER_CERTIFICATES`] carries (more are ignored, all of them).
pub const MAX_HELD_WORKER_CERTIFICATES: usize = 16;
/// Trailer from the proxy in place of [`RECEIPT_WORKER_CERTIFICATE`]: the SHA-256 (hex) of the
/// worker's certificate, one the client named in [`HELD_WORKER_CERTIFICATES`].
pub const RECEIPT_WORKER_CERTIFICATE_SHA256: &str = "x-cocoon-receipt-worker-certificate-sha256";
/// Trailer added by the proxy: what the answer cost the client, as JSON
/// `{"prompt_total_cost", "completion_total_cost", "total_cost"}` in nano-units.
pub const COST: &str = "x-cocoon-cost";
/// Request header from the client to the proxy: hex Ed25519 signature, by the wallet key its
/// certificate names, over a domain tag and the certificate's public key (see
/// `cocoon_node::wallet::wallet_proof`). Without it the proxy serves nobody on that wallet.
pub const WALLET_PROOF: &str = "x-cocoon-wallet-proof";
/// Request header from the client to the proxy: the client's latest payment voucher (JSON of a
/// `ClientPay` `SignedVoucher`), the cumulative total it signed after checking each receipt.
pub const PAYMENT: &str = "x-cocoon-payment";
