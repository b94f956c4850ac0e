//! Closing the channel with a proxy at once: the client pays for everything it was served, asks
//! the proxy for its release (the proxy's final statement, `POST /cocoon/v1/release`), checks it,
//! and closes its channel on the ledger with it — the whole balance comes back now instead of
//! after the registry's delay. The proxy serves this wallet no more from the first ask on, and
//! the client stops using it.

use bytes::Bytes;
use cocoon_money::{SignedVoucher, VoucherKind};
use cocoon_proto::link::{PATH_PAYMENT, PATH_RELEASE};
use http::Method;
use serde_json::{json, Value};

use super::{lock, now, proxy_account, Payer, PaymentError};
use crate::link::LiveLink;

impl Payer {
    /// Closes this client's channel with `link`'s proxy at once, with the proxy's release; the
    /// ledger's outcome. Fails (and changes nothing on the ledger) while the proxy still answers
    /// requests of this client, or has not applied its last payment: ask again.
    pub async fn close_with_release(&self, link: &LiveLink) -> Result<Value, PaymentError> {
        let proxy = proxy_account(link)
            .ok_or_else(|| PaymentError::Unverifiable("the proxy names no wallet".into()))?;
        let bad = |why: &str| PaymentError::Unverifiable(format!("the proxy's release: {why}"));
        // Everything checked so far is signed for and sent before the release is asked for.
        if let Some(voucher) = self.sign_pending(proxy, now, |c| c.latest).flatten() {
            let body = Bytes::from(serde_json::to_vec(&voucher).unwrap_or_default());
            self.exchange(link, Method::POST, PATH_PAYMENT, body)
                .await?;
        }
        let answer = self
            .exchange(link, Method::POST, PATH_RELEASE, Bytes::new())
            .await?;
        let release: SignedVoucher =
            serde_json::from_slice(&answer).map_err(|e| bad(&format!("unreadable: {e}")))?;
        let ids = self
            .ledger
            .voucher_ids(VoucherKind::ClientCharge, proxy, self.account)
            .map_err(|e| PaymentError::Ledger(e.to_string()))?;
        let v = release.voucher;
        if v.kind != VoucherKind::ClientCharge || !v.is_final || v.ids() != ids {
            return Err(bad("not a final statement for this client's channel"));
        }
        let key = cocoon_node::wallet::peer_voucher_key(&link.peer)
            .ok_or_else(|| bad("the proxy attests no voucher key"))?;
        release
            .verify(&key)
            .map_err(|_| bad("not signed by the proxy's attested voucher key"))?;
        // The proxy serves this wallet no more: use it no more.
        lock(&self.stopped)
            .entry(proxy)
            .or_insert_with(|| "the channel with it was closed".into());
        let receipt = self
            .ledger
            .close_client(proxy, Some(release))
            .await
            .map_err(|e| PaymentError::Ledger(e.to_string()))?;
        tracing::info!(%proxy, released = v.cumulative, "channel closed with the proxy's release");
        Ok(json!({
            "proxy": proxy.to_string(),
            "released": v.cumulative,
            "outcome": receipt.outcome,
        }))
    }
}
