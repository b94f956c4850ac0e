// The proxy contract on the TVM: stake, voucher keys (rules/proxy_keys.rs), worker claims,
// commission and close — every rule and refusal of cocoon-ledger's proxy contract.

import assert from 'node:assert/strict';
import { beforeEach, describe, test } from 'node:test';

import { Blockchain } from '@ton/sandbox';

import {
    accountId, assertPaid, body, ERR, exitOn, FEE, keyInt, keys, KIND, paidTo, proxy, proxyState, send,
    signVoucher, STATUS, toNano, voucherKeys, workerPaid,
} from './contracts.js';

const DELAY = 3600;
const MIN_STAKE = toNano('10');

let chain, operator, stranger, px, key1, workerId, workerAddress;

const workerPay = (cumulative, seqno, signer = key1, worker = workerId) => signVoucher(signer.secretKey, {
    kind: KIND.workerPay, proxy: accountId(px.address), counterparty: worker, cumulative, seqno,
});
const claim = (v, worker = workerId) => send(stranger, px, FEE, body.claim(worker, v));
const state = () => proxyState(chain, px);
const openProxy = (stake = MIN_STAKE, key = keyInt(key1)) => send(operator, px, stake + FEE, body.openProxy(stake, key));
// Client money arriving from a channel (anyone may pay in; only what comes with it is credited).
const payIn = (amount) => send(stranger, px, amount + FEE, body.channelPayment(amount, 1n));

beforeEach(async () => {
    chain = await Blockchain.create();
    chain.now = 1_800_000_000;
    operator = await chain.treasury('operator');
    stranger = await chain.treasury('stranger');
    key1 = keys(11);
    workerAddress = (await chain.treasury('worker')).address;
    workerId = accountId(workerAddress);
    px = proxy({ owner: operator.address, root: stranger.address, minStake: MIN_STAKE, closeDelay: DELAY });
});

describe('stake', () => {
    test('opens with at least the minimum stake and the first voucher key', async () => {
        assert.equal(exitOn(await openProxy(MIN_STAKE - 1n), px.address), ERR.stakeTooLow);
        assert.equal(exitOn(await send(stranger, px, MIN_STAKE + FEE, body.openProxy(MIN_STAKE, 1n)), px.address), ERR.notOwner);
        assert.equal(exitOn(await send(operator, px, MIN_STAKE, body.openProxy(MIN_STAKE, keyInt(key1))), px.address), ERR.feeNotCovered);
        assert.equal(exitOn(await openProxy(), px.address), 0);
        assert.equal(exitOn(await openProxy(), px.address), ERR.contractExists);
        const s = await state();
        assert.equal(s.status, STATUS.open);
        assert.equal(s.stake, MIN_STAKE);
        assert.deepEqual(await voucherKeys(chain, px), [keyInt(key1)]);
    });

    test('adds stake while open, by the operator only', async () => {
        assert.equal(exitOn(await send(operator, px, toNano('1') + FEE, body.addStake(toNano('1'))), px.address), ERR.notOpen);
        await openProxy();
        assert.equal(exitOn(await send(stranger, px, toNano('1') + FEE, body.addStake(toNano('1'))), px.address), ERR.notOwner);
        assert.equal(exitOn(await send(operator, px, FEE, body.addStake(0n)), px.address), ERR.zeroAmount);
        assert.equal(exitOn(await send(operator, px, toNano('1'), body.addStake(toNano('1'))), px.address), ERR.feeNotCovered);
        assert.equal(exitOn(await send(operator, px, toNano('1') + FEE, body.addStake(toNano('1'))), px.address), 0);
        assert.equal((await state()).stake, MIN_STAKE + toNano('1'));
    });

    test('a payment in credits no more than it brings', async () => {
        await openProxy();
        const r = await send(stranger, px, toNano('1'), body.channelPayment(toNano('2'), 1n));
        assert.equal(exitOn(r, px.address), ERR.feeNotCovered);
        assert.equal(exitOn(await payIn(toNano('2')), px.address), 0);
        assert.equal((await state()).pool, toNano('2'));
    });
});

describe('voucher keys', () => {
    test('only the operator authorizes; the current key cannot be authorized again', async () => {
        assert.equal(exitOn(await send(operator, px, FEE, body.authorizeKey(5n)), px.address), ERR.notOpen);
        await openProxy();
        assert.equal(exitOn(await send(stranger, px, FEE, body.authorizeKey(5n)), px.address), ERR.notOwner);
        assert.equal(exitOn(await send(operator, px, FEE, body.authorizeKey(keyInt(key1))), px.address), ERR.keyAlreadyCurrent);
    });

    test('at most 8 keys: a ninth evicts the oldest, whose vouchers are then refused', async () => {
        await openProxy();
        await payIn(toNano('5'));
        const all = [key1, ...Array.from({ length: 8 }, (_, i) => keys(20 + i))];
        for (const k of all.slice(1)) {
            assert.equal(exitOn(await send(operator, px, FEE, body.authorizeKey(keyInt(k))), px.address), 0);
        }
        assert.deepEqual(await voucherKeys(chain, px), all.slice(1).map(keyInt));
        assert.equal(exitOn(await claim(workerPay(toNano('1'), 1, key1)), px.address), ERR.badSignature);
        // Every honoured key, current or earlier, signs.
        assert.equal(exitOn(await claim(workerPay(toNano('1'), 1, all[1])), px.address), 0);
        assert.equal(exitOn(await claim(workerPay(toNano('2'), 2, all[8])), px.address), 0);
    });

    test('re-authorizing an earlier key makes it current without a duplicate', async () => {
        await openProxy();
        const k2 = keys(12);
        await send(operator, px, FEE, body.authorizeKey(keyInt(k2)));
        await send(operator, px, FEE, body.authorizeKey(keyInt(key1)));
        assert.deepEqual(await voucherKeys(chain, px), [keyInt(k2), keyInt(key1)]);
    });

    test('revoke drops an earlier key at once; never the current one or an unknown one', async () => {
        await openProxy();
        await payIn(toNano('5'));
        const k2 = keys(12);
        await send(operator, px, FEE, body.authorizeKey(keyInt(k2)));
        assert.equal(exitOn(await send(operator, px, FEE, body.revokeKey(keyInt(k2))), px.address), ERR.notEarlierKey);
        assert.equal(exitOn(await send(operator, px, FEE, body.revokeKey(77n)), px.address), ERR.notEarlierKey);
        assert.equal(exitOn(await send(stranger, px, FEE, body.revokeKey(keyInt(key1))), px.address), ERR.notOwner);
        const signedBefore = workerPay(toNano('1'), 1, key1);
        assert.equal(exitOn(await send(operator, px, FEE, body.revokeKey(keyInt(key1))), px.address), 0);
        assert.deepEqual(await voucherKeys(chain, px), [keyInt(k2)]);
        assert.equal(exitOn(await claim(signedBefore), px.address), ERR.badSignature);
    });

    test('revoking works while closing (workers still claim), not once closed', async () => {
        await openProxy();
        await send(operator, px, FEE, body.authorizeKey(keyInt(keys(12))));
        await send(operator, px, FEE, body.startProxyClose());
        assert.equal(exitOn(await send(operator, px, FEE, body.revokeKey(keyInt(key1))), px.address), 0);
        await send(operator, px, FEE, body.authorizeKey(keyInt(keys(13))));
        chain.now += DELAY;
        await send(operator, px, FEE, body.finishProxyClose());
        assert.equal(exitOn(await send(operator, px, FEE, body.revokeKey(keyInt(keys(12)))), px.address), ERR.notEarlierKey);
    });
});

describe('worker claims', () => {
    test('anyone submits; the worker gets exactly the difference, from the pool first', async () => {
        await openProxy();
        await payIn(toNano('1'));
        const r = await claim(workerPay(toNano('3'), 1));
        assert.equal(exitOn(r, px.address), 0);
        assertPaid(r, px.address, workerAddress, toNano('3'));
        let s = await state();
        assert.equal(s.pool, 0n);
        assert.equal(s.stake, MIN_STAKE - toNano('2'));
        assert.deepEqual(await workerPaid(chain, px, workerId), { paid: toNano('3'), seqno: 1n });
        const second = await claim(workerPay(toNano('3.5'), 4));
        assertPaid(second, px.address, workerAddress, toNano('0.5'));
        s = await state();
        assert.equal(s.stake, MIN_STAKE - toNano('2.5'));
    });

    test('replayed, reordered and decreasing vouchers pay nothing', async () => {
        await openProxy();
        const v1 = workerPay(toNano('1'), 1);
        const v2 = workerPay(toNano('2'), 2);
        assert.equal(exitOn(await claim(v2), px.address), 0);
        assert.equal(exitOn(await claim(v2), px.address), ERR.voucherNotNewer);
        assert.equal(exitOn(await claim(v1), px.address), ERR.voucherNotNewer);
        assert.equal(exitOn(await claim(workerPay(toNano('1'), 3)), px.address), ERR.voucherDecreases);
        // An equal total with a newer seqno is applied and pays nothing (no message).
        const same = await claim(workerPay(toNano('2'), 4));
        assert.equal(exitOn(same, px.address), 0);
        assert.equal(paidTo(same, px.address, workerAddress), 0n);
        assert.equal((await state()).stake, MIN_STAKE - toNano('2'));
    });

    test('refusals: another worker, another kind, a tampered amount, an unknown key, no fee', async () => {
        await openProxy();
        assert.equal(exitOn(await claim(workerPay(toNano('1'), 1), workerId + 1n), px.address), ERR.badSignature);
        const charge = signVoucher(key1.secretKey, { kind: KIND.clientCharge, proxy: accountId(px.address), counterparty: workerId, cumulative: toNano('1'), seqno: 1 });
        assert.equal(exitOn(await claim(charge), px.address), ERR.badSignature);
        assert.equal(exitOn(await claim({ ...workerPay(toNano('1'), 1), cumulative: toNano('9') }), px.address), ERR.badSignature);
        assert.equal(exitOn(await claim(workerPay(toNano('1'), 1, keys(99))), px.address), ERR.badSignature);
        assert.equal(exitOn(await send(stranger, px, toNano('0.01'), body.claim(workerId, workerPay(toNano('1'), 1))), px.address), ERR.feeNotCovered);
    });

    test('a claim beyond pool and stake is refused whole', async () => {
        await openProxy();
        await payIn(toNano('1'));
        assert.equal(exitOn(await claim(workerPay(MIN_STAKE + toNano('1') + 1n, 1)), px.address), ERR.insufficientProxyFunds);
        assert.equal(exitOn(await claim(workerPay(MIN_STAKE + toNano('1'), 1)), px.address), 0);
        const s = await state();
        assert.equal(s.stake + s.pool, 0n);
    });
});

describe('commission and close', () => {
    test('the operator withdraws commission from the pool only', async () => {
        await openProxy();
        await payIn(toNano('2'));
        assert.equal(exitOn(await send(stranger, px, FEE, body.withdrawCommission(1n)), px.address), ERR.notOwner);
        assert.equal(exitOn(await send(operator, px, FEE, body.withdrawCommission(toNano('2') + 1n)), px.address), ERR.insufficientFunds);
        assert.equal(exitOn(await send(operator, px, FEE, body.withdrawCommission(0n)), px.address), ERR.zeroAmount);
        const r = await send(operator, px, FEE, body.withdrawCommission(toNano('2')));
        assertPaid(r, px.address, operator.address, toNano('2'));
        assert.equal((await state()).pool, 0n);
    });

    test('close: workers claim during the delay, then stake and pool return to the operator', async () => {
        assert.equal(exitOn(await send(operator, px, FEE, body.startProxyClose()), px.address), ERR.notOpen);
        await openProxy();
        await payIn(toNano('2'));
        assert.equal(exitOn(await send(stranger, px, FEE, body.startProxyClose()), px.address), ERR.notOwner);
        assert.equal(exitOn(await send(operator, px, FEE, body.finishProxyClose()), px.address), ERR.notClosing);
        assert.equal(exitOn(await send(operator, px, FEE, body.startProxyClose()), px.address), 0);
        assert.equal((await state()).releaseAt, chain.now + DELAY);
        assert.equal(exitOn(await send(operator, px, FEE, body.startProxyClose()), px.address), ERR.notOpen);
        assert.equal(exitOn(await send(operator, px, FEE, body.authorizeKey(5n)), px.address), ERR.notOpen);
        assert.equal(exitOn(await claim(workerPay(toNano('1'), 1)), px.address), 0);
        chain.now += DELAY - 1;
        assert.equal(exitOn(await send(operator, px, FEE, body.finishProxyClose()), px.address), ERR.tooEarly);
        chain.now += 1;
        assert.equal(exitOn(await send(stranger, px, FEE, body.finishProxyClose()), px.address), ERR.notOwner);
        const r = await send(operator, px, FEE, body.finishProxyClose());
        assert.equal(exitOn(r, px.address), 0);
        // Stake and pool, and the fee surplus of earlier requests (all but the storage reserve).
        assert.ok(paidTo(r, px.address, operator.address) >= MIN_STAKE + toNano('1'));
        assert.ok((await chain.getContract(px.address)).balance <= toNano('0.05'));
        const s = await state();
        assert.deepEqual([s.status, s.stake, s.pool], [STATUS.closed, 0n, 0n]);
        // A closed proxy refuses payments (they bounce back to the channel) and pays no claims.
        assert.equal(exitOn(await payIn(toNano('1')), px.address), ERR.notOpen);
        assert.equal(exitOn(await claim(workerPay(toNano('2'), 2)), px.address), ERR.insufficientProxyFunds);
    });

    test('a reopened proxy keeps its workers\' paid totals and earlier keys', async () => {
        await openProxy();
        await claim(workerPay(toNano('1'), 1));
        await send(operator, px, FEE, body.startProxyClose());
        chain.now += DELAY;
        await send(operator, px, FEE, body.finishProxyClose());
        const k2 = keys(12);
        assert.equal(exitOn(await openProxy(MIN_STAKE, keyInt(k2)), px.address), 0);
        assert.deepEqual(await voucherKeys(chain, px), [keyInt(key1), keyInt(k2)]);
        assert.equal(exitOn(await claim(workerPay(toNano('1'), 1)), px.address), ERR.voucherNotNewer);
    });

    test('a release must be final and signed by an honoured key', async () => {
        await openProxy();
        const release = (signer, isFinal) => signVoucher(signer.secretKey, { kind: KIND.clientCharge, proxy: accountId(px.address), counterparty: accountId(stranger.address), cumulative: 0n, seqno: 1, isFinal });
        const ask = (v) => stranger.send({ to: px.address, value: FEE, body: body.verifyRelease(7n, v) });
        assert.equal(exitOn(await ask(release(key1, false)), px.address), ERR.voucherNotFinal);
        assert.equal(exitOn(await ask(release(keys(99), true)), px.address), ERR.badSignature);
        const ok = await ask(release(key1, true));
        assert.equal(exitOn(ok, px.address), 0);
        assert.equal(exitOn(ok, stranger.address), 0);
    });

    test('unknown messages are refused', async () => {
        await openProxy();
        assert.equal(exitOn(await stranger.send({ to: px.address, value: FEE, body: body.topUp(1n) }), px.address), ERR.unknownOp);
    });
});
