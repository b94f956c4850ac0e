// Conservation of money over seeded random sequences, including what only happens on TON:
// payments bouncing off a closed proxy, messages that bring too little, hostile bodies, plain
// transfers, strangers' requests. After every step: all balances plus all fees paid are what they
// were at the start, and every contract holds at least what it tracks.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { beginCell } from '@ton/core';
import { Blockchain } from '@ton/sandbox';

import {
    accountId, body, channel, channelState, FEE, keyInt, keys, KIND, proxy, proxyState, signVoucher, toNano,
} from './contracts.js';
import { Ledger } from './ledger.js';

// mulberry32: a small seeded PRNG, so a failure replays exactly.
function prng(seed) {
    let a = seed >>> 0;
    return () => {
        a = (a + 0x6d2b79f5) >>> 0;
        let t = a;
        t = Math.imul(t ^ (t >>> 15), t | 1);
        t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
        return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
}

for (const seed of [1, 2]) {
    test(`seed ${seed}: balances plus fees stay constant, contracts stay solvent`, async () => {
        const random = prng(seed);
        const pick = (n) => Math.floor(random() * n);
        const coins = (max) => BigInt(Math.floor(random() * max * 1e9));
        const chain = await Blockchain.create();
        chain.now = 1_800_000_000;
        const ledger = new Ledger(chain);
        const operator = await chain.treasury('operator');
        const anyone = await chain.treasury('anyone');
        const wallets = [await chain.treasury('c0'), await chain.treasury('c1')];
        const clientKeys = [keys(1), keys(2)];
        const voucherKey = keys(9);
        const px = proxy({ owner: operator.address, root: anyone.address, minStake: toNano('1'), closeDelay: 100 });
        const channels = clientKeys.map((k, i) => channel({ proxy: px.address, owner: wallets[i].address, clientKey: keyInt(k), minStake: toNano('1'), closeDelay: 50 }));
        const worker = keyInt(keys(7));
        for (const a of [operator, anyone, ...wallets]) ledger.watch(a.address);
        const initial = await ledger.total();
        const paid = [[0n, 0n], [0n, 0n]];
        let earned = [0n, 0n];
        const run = async (from, target, value, msgBody) => ledger.record(
            await from.send({ to: target.address, value, body: msgBody, init: target.init, bounce: true }));
        // Sometimes a message brings too little for its amount and fees.
        const fee = () => (random() < 0.1 ? toNano('0.001') : FEE);

        for (let step = 0; step < 90; step += 1) {
            const i = pick(2);
            const ch = channels[i];
            switch (pick(12)) {
            case 0: await run(operator, px, toNano('2') + fee(), body.openProxy(toNano('2'), keyInt(voucherKey))); break;
            case 1: { const a = coins(3); await run(wallets[i], ch, a + fee(), body.openChannel(a, toNano('1'))); break; }
            case 2: { const a = coins(2); await run(wallets[i], ch, a + fee(), body.topUp(a)); break; }
            case 3: await run(wallets[i], ch, fee(), body.withdraw(coins(2))); break;
            case 4: case 5: {
                paid[i] = [paid[i][0] + coins(1), paid[i][1] + 1n];
                const v = signVoucher(clientKeys[i].secretKey, { kind: KIND.clientPay, proxy: accountId(px.address), counterparty: accountId(channels[i].address), cumulative: paid[i][0], seqno: paid[i][1] });
                await run(anyone, ch, fee(), body.pay(v));
                break;
            }
            case 6: {
                earned = [earned[0] + coins(1), earned[1] + 1n];
                const v = signVoucher(voucherKey.secretKey, { kind: KIND.workerPay, proxy: accountId(px.address), counterparty: worker, cumulative: earned[0], seqno: earned[1] });
                await run(anyone, px, fee(), body.claim(worker, v));
                break;
            }
            case 7: await run(wallets[i], ch, fee(), random() < 0.5 ? body.close() : body.finishClose()); break;
            case 8: await run(operator, px, fee(), [body.startProxyClose(), body.finishProxyClose(), body.withdrawCommission(coins(1))][pick(3)]); break;
            case 9: {
                // Hostile: a stranger's requests, a forged proxy answer, garbage, a payment claiming
                // more than it brings.
                const hostile = [
                    () => run(anyone, ch, FEE, body.withdraw(1n)),
                    () => run(anyone, ch, FEE, body.releaseVerified(keyInt(clientKeys[i]), 0n)),
                    () => run(anyone, px, FEE, body.withdrawCommission(1n)),
                    () => run(anyone, px, toNano('0.1'), body.channelPayment(toNano('5'), 1n)),
                    () => run(anyone, ch, FEE, beginCell().storeUint(0xdeadbeef, 32).storeUint(7, 200).endCell()),
                    () => run(anyone, px, FEE, beginCell().storeUint(0x43510008, 32).endCell()),
                ];
                await hostile[pick(hostile.length)]();
                break;
            }
            case 10: await run(anyone, random() < 0.5 ? ch : px, coins(1) + 1n, beginCell().endCell()); break;
            default: chain.now += [1, 50, 100][pick(3)];
            }
            for (const c of channels) {
                const account = await chain.getContract(c.address);
                if (account.accountState?.type !== 'active') continue;
                assert.ok(account.balance >= (await channelState(chain, c)).balance, `step ${step}: channel solvent`);
            }
            const pxAccount = await chain.getContract(px.address);
            if (pxAccount.accountState?.type === 'active') {
                const s = await proxyState(chain, px);
                assert.ok(pxAccount.balance >= s.stake + s.pool, `step ${step}: proxy solvent`);
            }
            assert.equal(await ledger.total(), initial, `step ${step}: balances + fees conserved`);
        }
    });
}
