// Prints what crates/cocoon-ton's unit tests compare with (`npm run vectors`): every message body,
// the contracts' addresses and the registry's lists, built by the JS wrappers the sandbox tests use
// (test/contracts.js), for fixed inputs. Kept in crates/cocoon-ton/testdata/js_vectors.json (test/vectors.test.js fails when it is stale):
//   node vectors.js > ../crates/cocoon-ton/testdata/js_vectors.json

import { Address } from '@ton/core';

import { body, channel, proxy, registryLists, registryParams, root } from './test/contracts.js';

const addr = (byte) => Address.parse(`0:${byte.repeat(32)}`);
const int = (byte) => BigInt(`0x${byte.repeat(32)}`);
const signed = { cumulative: 1234n, seqno: 7n, isFinal: true, signature: Buffer.alloc(64, 0x5a) };
const hex = (cell) => cell.toBoc().toString('hex');

const params = registryParams({
    pricePerToken: 1000n, workerFeePerToken: 800n, promptMultiplier: 10_000, cachedMultiplier: 1_000,
    completionMultiplier: 10_000, reasoningMultiplier: 9_000, clientDelayBeforeClose: 600,
    proxyDelayBeforeClose: 3600, minClientStake: 1_000_000_000n, minProxyStake: 10_000_000_000n,
});
const lists = registryLists({
    proxyImages: [int('a1')], workerImages: [int('b1'), int('b2')],
    models: { [int('c1').toString()]: 'qwen3-0.6b' },
    proxies: [{ seqno: 3, address: addr('33'), worker: 'proxy.example:9000', client: 'proxy.example:8443' }],
});

export function vectors() {
    return {
        bodies: {
            open_channel: hex(body.openChannel(5_000_000_000n, 1_000_000_000n)),
            top_up: hex(body.topUp(42n)),
            withdraw: hex(body.withdraw(43n)),
            pay: hex(body.pay(signed)),
            close: hex(body.close()),
            close_with_release: hex(body.closeWithRelease(signed)),
            finish_close: hex(body.finishClose()),
            release_verified: hex(body.releaseVerified(int('aa'), 1234n)),
            open_proxy: hex(body.openProxy(10_000_000_000n, int('aa'))),
            add_stake: hex(body.addStake(44n)),
            authorize_key: hex(body.authorizeKey(int('ab'))),
            revoke_key: hex(body.revokeKey(int('ac'))),
            withdraw_commission: hex(body.withdrawCommission(45n)),
            start_proxy_close: hex(body.startProxyClose()),
            finish_proxy_close: hex(body.finishProxyClose()),
            claim: hex(body.claim(int('bb'), signed)),
            channel_payment: hex(body.channelPayment(46n, int('aa'))),
            verify_release: hex(body.verifyRelease(int('aa'), signed)),
        },
        registry_params: hex(params),
        registry_lists: hex(lists),
        addresses: {
            channel: channel({ proxy: addr('33'), owner: addr('44'), clientKey: int('aa'), minStake: 1_000_000_000n, closeDelay: 600 }).address.toRawString(),
            proxy: proxy({ owner: addr('11'), root: addr('22'), minStake: 10_000_000_000n, closeDelay: 3600 }).address.toRawString(),
            root: root({ owner: addr('11'), params, lists }).address.toRawString(),
        },
    };
}

if (import.meta.url === `file://${process.argv[1]}`) {
    console.log(JSON.stringify(vectors(), null, 2));
}
