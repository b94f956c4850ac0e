// Prints what each contract operation costs in the sandbox (real TVM, current mainnet config):
// the fees of every transaction on the Cocoon contracts it causes plus the forward fees of the
// messages they send, and the gas of the first transaction. `npm run gas`; docs/contracts.md
// quotes the table.

import { beginCell, fromNano } from '@ton/core';
import { Blockchain } from '@ton/sandbox';
import { flattenTransaction } from '@ton/test-utils';

import {
    accountId, body, channel, FEE, keyInt, keys, KIND, proxy, registryLists, registryParams, root,
    signVoucher, toNano, updateRegistry,
} from './test/contracts.js';

const chain = await Blockchain.create();
chain.now = 1_800_000_000;
const operator = await chain.treasury('operator');
const wallet = await chain.treasury('client');
const anyone = await chain.treasury('anyone');
const key = keys(1);
const client = keys(2);
const px = proxy({ owner: operator.address, root: anyone.address, minStake: toNano('10'), closeDelay: 100 });
const ch = channel({ proxy: px.address, owner: wallet.address, clientKey: keyInt(client), minStake: toNano('1'), closeDelay: 100 });
const ours = () => [px.address, ch.address, registry.address];
let registry = root({ owner: operator.address, params: registryParams({
    pricePerToken: 1000n, workerFeePerToken: 800n, promptMultiplier: 10000, cachedMultiplier: 1000,
    completionMultiplier: 10000, reasoningMultiplier: 10000, clientDelayBeforeClose: 600,
    proxyDelayBeforeClose: 3600, minClientStake: toNano('1'), minProxyStake: toNano('10'),
}) });

const rows = [];
async function measure(name, from, target, value, msgBody) {
    const result = await from.send({ to: target.address, value, body: msgBody, init: target.init, bounce: true });
    let fees = 0n;
    let gas = null;
    for (const tx of result.transactions) {
        const flat = flattenTransaction(tx);
        if (!ours().some((a) => flat.to?.equals(a))) continue;
        if (flat.exitCode !== 0 && flat.exitCode !== undefined) throw new Error(`${name}: exit ${flat.exitCode}`);
        fees += tx.totalFees.coins;
        for (const out of tx.outMessages.values()) if (out.info.type === 'internal') fees += out.info.forwardFee;
        if (gas === null && tx.description.type === 'generic' && tx.description.computePhase.type === 'vm') {
            gas = tx.description.computePhase.gasUsed;
        }
    }
    rows.push([name, fromNano(fees), String(gas)]);
}

const pay = (cumulative, seqno) => signVoucher(client.secretKey, { kind: KIND.clientPay, proxy: accountId(px.address), counterparty: keyInt(client), cumulative, seqno });
const workerPay = (signer, worker, cumulative, seqno) => signVoucher(signer.secretKey, { kind: KIND.workerPay, proxy: accountId(px.address), counterparty: worker, cumulative, seqno });

await measure('proxy: OpenProxy (deploy)', operator, px, toNano('10') + FEE, body.openProxy(toNano('10'), keyInt(key)));
await measure('proxy: AddStake', operator, px, toNano('1') + FEE, body.addStake(toNano('1')));
await measure('channel: OpenChannel (deploy)', wallet, ch, toNano('5') + FEE, body.openChannel(toNano('5'), toNano('1')));
await measure('channel: TopUp', wallet, ch, toNano('1') + FEE, body.topUp(toNano('1')));
await measure('channel: Pay (channel + proxy)', anyone, ch, FEE, body.pay(pay(toNano('0.5'), 1)));
await measure('channel: Pay, next voucher', anyone, ch, FEE, body.pay(pay(toNano('0.6'), 2)));
await measure('channel: Withdraw', wallet, ch, FEE, body.withdraw(toNano('1')));
await measure('proxy: Claim, first for a worker', anyone, px, FEE, body.claim(5n, workerPay(key, 5n, toNano('0.2'), 1)));
await measure('proxy: Claim, next', anyone, px, FEE, body.claim(5n, workerPay(key, 5n, toNano('0.3'), 2)));
for (let i = 0; i < 7; i += 1) await measure(`proxy: AuthorizeKey (${i + 2} keys)`, operator, px, FEE, body.authorizeKey(keyInt(keys(20 + i))));
await measure('proxy: AuthorizeKey (9th, evicts)', operator, px, FEE, body.authorizeKey(keyInt(keys(30))));
await measure('proxy: Claim, 8 keys, signed by the newest', anyone, px, FEE, body.claim(5n, workerPay(keys(30), 5n, toNano('0.35'), 3)));
await measure('proxy: Claim, 8 keys, signed by the oldest', anyone, px, FEE, body.claim(5n, workerPay(keys(20), 5n, toNano('0.4'), 4)));
await measure('proxy: RevokeKey', operator, px, FEE, body.revokeKey(keyInt(keys(21))));
await measure('proxy: WithdrawCommission', operator, px, FEE, body.withdrawCommission(toNano('0.1')));
const release = signVoucher(keys(30).secretKey, { kind: KIND.clientCharge, proxy: accountId(px.address), counterparty: keyInt(client), cumulative: toNano('0.6'), seqno: 9, isFinal: true });
await measure('channel: CloseWithRelease (channel, proxy, channel)', wallet, ch, FEE, body.closeWithRelease(release));
await measure('channel: OpenChannel (reopen)', wallet, ch, toNano('2') + FEE, body.openChannel(toNano('2'), toNano('1')));
await measure('channel: Close (delay)', wallet, ch, FEE, body.close());
chain.now += 100;
await measure('channel: FinishClose', wallet, ch, FEE, body.finishClose());
await measure('proxy: StartClose', operator, px, FEE, body.startProxyClose());
chain.now += 100;
await measure('proxy: FinishClose', operator, px, FEE, body.finishProxyClose());
const params = registryParams({
    pricePerToken: 1000n, workerFeePerToken: 800n, promptMultiplier: 10000, cachedMultiplier: 1000,
    completionMultiplier: 10000, reasoningMultiplier: 10000, clientDelayBeforeClose: 600,
    proxyDelayBeforeClose: 3600, minClientStake: toNano('1'), minProxyStake: toNano('10'),
});
await measure('root: deploy', operator, registry, FEE, beginCell().endCell());
const lists = registryLists({ proxyImages: [1n, 2n], workerImages: [3n, 4n, 5n], models: { 7: 'qwen3-0.6b' }, proxies: [{ seqno: 1, address: px.address, worker: 'proxy.example:9000', client: 'proxy.example:8443' }] });
await measure('root: UpdateRegistry (2+3 images, 1 model, 1 proxy)', operator, registry, FEE, updateRegistry(2, operator.address, params, lists));

const width = Math.max(...rows.map((r) => r[0].length));
console.log(`| ${'operation'.padEnd(width)} | fees (TON) | gas (first tx) |`);
console.log(`|${'-'.repeat(width + 2)}|-----------:|---------------:|`);
for (const [name, fees, gas] of rows) console.log(`| ${name.padEnd(width)} | ${fees.padStart(10)} | ${gas.padStart(14)} |`);
