// The client × proxy channel on the TVM: every rule and refusal of cocoon-ledger's client contract
// (rules.rs, rules/client_channel.rs) that applies on chain, bounced payments, and close delays.

import assert from 'node:assert/strict';
import { beforeEach, describe, test } from 'node:test';

import { Blockchain, internal } from '@ton/sandbox';
import { flattenTransaction } from '@ton/test-utils';

import {
    accountId, body, channel, channelState, ERR, exitOn, FEE, keyInt, keys, KIND, proxy, proxyState,
    assertPaid, paidTo, send, signVoucher, STATUS, toNano,
} from './contracts.js';

const DELAY = 600;
const MIN_STAKE = toNano('1');

let chain, owner, operator, stranger, px, ch, client, proxyKey;

// A client-signed payment: under this proxy, `cumulative` in total (statement `seqno`).
const pay = (cumulative, seqno, { signer = client, isFinal = false } = {}) => signVoucher(signer.secretKey, {
    kind: KIND.clientPay, proxy: accountId(px.address), counterparty: accountId(ch.address), cumulative, seqno, isFinal,
});
const release = (cumulative, seqno, { signer = proxyKey, isFinal = true } = {}) => signVoucher(signer.secretKey, {
    kind: KIND.clientCharge, proxy: accountId(px.address), counterparty: accountId(ch.address), cumulative, seqno, isFinal,
});

const state = () => channelState(chain, ch);

beforeEach(async () => {
    chain = await Blockchain.create();
    chain.now = 1_800_000_000;
    owner = await chain.treasury('client-wallet');
    operator = await chain.treasury('operator');
    stranger = await chain.treasury('stranger');
    client = keys(1);
    proxyKey = keys(2);
    px = proxy({ owner: operator.address, root: stranger.address, minStake: 0n });
    assert.equal(exitOn(await send(operator, px, toNano('10') + FEE, body.openProxy(toNano('10'), keyInt(proxyKey))), px.address), 0);
    ch = channel({ proxy: px.address, owner: owner.address, clientKey: keyInt(client), minStake: MIN_STAKE, closeDelay: DELAY });
});

async function open(amount = toNano('5'), stake = MIN_STAKE) {
    return send(owner, ch, amount + FEE, body.openChannel(amount, stake));
}

describe('opening and funding', () => {
    test('opens with a deposit and a stake of at least the minimum', async () => {
        assert.equal(exitOn(await open(), ch.address), 0);
        const s = await state();
        assert.equal(s.status, STATUS.open);
        assert.equal(s.balance, toNano('5'));
        assert.equal(s.stake, MIN_STAKE);
    });

    test('refusals: stake below the minimum, deposit below the stake, no fee, twice, a stranger', async () => {
        assert.equal(exitOn(await open(toNano('5'), MIN_STAKE - 1n), ch.address), ERR.stakeTooLow);
        assert.equal(exitOn(await open(MIN_STAKE - 1n, MIN_STAKE), ch.address), ERR.stakeTooLow);
        assert.equal(exitOn(await send(owner, ch, toNano('5'), body.openChannel(toNano('5'), MIN_STAKE)), ch.address), ERR.feeNotCovered);
        assert.equal(exitOn(await send(stranger, ch, toNano('6'), body.openChannel(toNano('5'), MIN_STAKE)), ch.address), ERR.notOwner);
        assert.equal(exitOn(await open(), ch.address), 0);
        assert.equal(exitOn(await open(), ch.address), ERR.contractExists);
    });

    test('a zero deposit is refused', async () => {
        const free = channel({ proxy: px.address, owner: owner.address, clientKey: keyInt(client), minStake: 0n, closeDelay: DELAY });
        assert.equal(exitOn(await send(owner, free, FEE, body.openChannel(0n, 0n)), free.address), ERR.zeroAmount);
    });

    test('top-up and withdraw above the stake; never into the stake', async () => {
        await open();
        assert.equal(exitOn(await send(owner, ch, toNano('2') + FEE, body.topUp(toNano('2'))), ch.address), 0);
        assert.equal((await state()).balance, toNano('7'));
        assert.equal(exitOn(await send(owner, ch, toNano('2'), body.topUp(toNano('2'))), ch.address), ERR.feeNotCovered);
        assert.equal(exitOn(await send(owner, ch, FEE, body.topUp(0n)), ch.address), ERR.zeroAmount);
        assert.equal(exitOn(await send(stranger, ch, FEE, body.withdraw(1n)), ch.address), ERR.notOwner);
        assert.equal(exitOn(await send(owner, ch, FEE, body.withdraw(toNano('6') + 1n)), ch.address), ERR.withdrawBelowStake);
        assert.equal(exitOn(await send(owner, ch, FEE, body.withdraw(0n)), ch.address), ERR.zeroAmount);
        const r = await send(owner, ch, FEE, body.withdraw(toNano('6')));
        assert.equal(exitOn(r, ch.address), 0);
        assert.equal((await state()).balance, MIN_STAKE);
        // The wallet got the amount itself: fees came from the message, not from the deposit.
        assertPaid(r, ch.address, owner.address, toNano('6'));
    });

    test('a closed channel takes no top-up or withdrawal', async () => {
        assert.equal(exitOn(await send(owner, ch, toNano('2') + FEE, body.topUp(toNano('2'))), ch.address), ERR.notOpen);
        await open();
        await send(owner, ch, FEE, body.close());
        assert.equal(exitOn(await send(owner, ch, FEE, body.withdraw(1n)), ch.address), ERR.notOpen);
    });

    test('unknown messages are refused; plain transfers are accepted', async () => {
        await open();
        const r = await stranger.send({ to: ch.address, value: FEE, body: body.addStake(1n) });
        assert.equal(exitOn(r, ch.address), ERR.unknownOp);
        const plain = await stranger.send({ to: ch.address, value: FEE });
        assert.equal(exitOn(plain, ch.address), 0);
    });
});

describe('client-signed payments', () => {
    test('anyone submits the client\'s voucher; the difference moves to the proxy\'s pool', async () => {
        await open();
        const r = await send(stranger, ch, FEE, body.pay(pay(toNano('1'), 1)));
        assert.equal(exitOn(r, ch.address), 0);
        assert.equal(exitOn(r, px.address), 0);
        assert.equal((await proxyState(chain, px)).pool, toNano('1'));
        await send(stranger, ch, FEE, body.pay(pay(toNano('1.5'), 2)));
        const s = await state();
        assert.equal(s.charged, toNano('1.5'));
        assert.equal(s.collected, toNano('1.5'));
        assert.equal(s.balance, toNano('3.5'));
        assert.equal(s.voucherSeqno, 2n);
        assert.equal((await proxyState(chain, px)).pool, toNano('1.5'));
    });

    test('replayed, reordered and decreasing vouchers change nothing', async () => {
        await open();
        const v1 = pay(toNano('1'), 1);
        const v2 = pay(toNano('2'), 2);
        assert.equal(exitOn(await send(stranger, ch, FEE, body.pay(v2)), ch.address), 0);
        assert.equal(exitOn(await send(stranger, ch, FEE, body.pay(v2)), ch.address), ERR.voucherNotNewer);
        assert.equal(exitOn(await send(stranger, ch, FEE, body.pay(v1)), ch.address), ERR.voucherNotNewer);
        assert.equal(exitOn(await send(stranger, ch, FEE, body.pay(pay(toNano('1'), 3))), ch.address), ERR.voucherDecreases);
        const s = await state();
        assert.equal(s.charged, toNano('2'));
        assert.equal(s.balance, toNano('3'));
        assert.equal((await proxyState(chain, px)).pool, toNano('2'));
    });

    // A voucher of 1 coin, statement 1, signed by `signer` with the given fields changed.
    const variant = (signer, { kind = KIND.clientPay, proxyId = accountId(px.address), counterparty = accountId(ch.address) }) =>
        signVoucher(signer.secretKey, { kind, proxy: proxyId, counterparty, cumulative: toNano('1'), seqno: 1 });
    const refused = async (v) => exitOn(await send(stranger, ch, FEE, body.pay(v)), ch.address);

    test('only the client key signs: the proxy\'s key, a tampered amount, another proxy or kind are refused', async () => {
        await open();
        assert.equal(await refused(pay(toNano('1'), 1, { signer: proxyKey })), ERR.badSignature);
        assert.equal(await refused({ ...pay(toNano('1'), 1), cumulative: toNano('4') }), ERR.badSignature);
        assert.equal(await refused(variant(client, { proxyId: accountId(stranger.address) })), ERR.badSignature);
        assert.equal(await refused(variant(client, { kind: KIND.workerPay })), ERR.badSignature);
        assert.equal(exitOn(await send(stranger, ch, toNano('0.01'), body.pay(pay(toNano('1'), 1))), ch.address), ERR.feeNotCovered);
        assert.equal((await state()).charged, 0n);
    });

    test('another client\'s payment cannot be collected from this channel', async () => {
        await open();
        const other = keys(3);
        assert.equal(await refused(variant(other, { counterparty: keyInt(other) })), ERR.badSignature);
        // Nor one this client signed for another client's channel.
        assert.equal(await refused(variant(client, { counterparty: keyInt(other) })), ERR.badSignature);
        assert.equal((await state()).balance, toNano('5'));
    });

    test('a payment or release signed for one of the key\'s channels is refused by its other channels', async () => {
        // The same client key, a second channel under the same proxy (made under an older
        // registry stake): the proxy must not collect one signed payment from both.
        await open();
        const second = channel({ proxy: px.address, owner: owner.address, clientKey: keyInt(client), minStake: 0n, closeDelay: DELAY });
        assert.equal(exitOn(await send(owner, second, toNano('5') + FEE, body.openChannel(toNano('5'), 0n)), second.address), 0);
        const v = pay(toNano('1'), 1);
        assert.equal(exitOn(await send(stranger, ch, FEE, body.pay(v)), ch.address), 0);
        assert.equal(exitOn(await send(stranger, second, FEE, body.pay(v)), second.address), ERR.badSignature);
        // The pre-channel form (the client key as counterparty) is refused too.
        assert.equal(await refused(variant(client, { counterparty: keyInt(client) })), ERR.badSignature);
        const r = await send(owner, second, FEE, body.closeWithRelease(release(0n, 1)));
        assert.equal(exitOn(r, px.address), ERR.badSignature);
        const s = await channelState(chain, second);
        assert.deepEqual([s.status, s.balance, s.charged], [STATUS.open, toNano('5'), 0n]);
        assert.equal((await proxyState(chain, px)).pool, toNano('1'));
    });

    test('the delay and the stake are part of the address: a channel with weaker terms is another contract', () => {
        const terms = { proxy: px.address, owner: owner.address, clientKey: keyInt(client), minStake: MIN_STAKE, closeDelay: DELAY };
        const addresses = [
            channel(terms), channel({ ...terms, closeDelay: 0 }), channel({ ...terms, minStake: 0n }),
            channel({ ...terms, owner: stranger.address }), channel({ ...terms, proxy: stranger.address }),
        ].map((c) => c.address.toRawString());
        assert.equal(new Set(addresses).size, addresses.length);
        const p = { owner: operator.address, root: stranger.address, minStake: MIN_STAKE, closeDelay: 3600 };
        assert.notEqual(proxy(p).address.toRawString(), proxy({ ...p, closeDelay: 0 }).address.toRawString());
        assert.notEqual(proxy(p).address.toRawString(), proxy({ ...p, minStake: 0n }).address.toRawString());
    });

    test('a payment beyond the balance collects what is there (the proxy\'s shortfall)', async () => {
        await open(toNano('2'), MIN_STAKE);
        await send(stranger, ch, FEE, body.pay(pay(toNano('3'), 1)));
        const s = await state();
        assert.equal(s.balance, 0n);
        assert.equal(s.charged, toNano('3'));
        assert.equal(s.collected, toNano('2'));
        assert.equal((await proxyState(chain, px)).pool, toNano('2'));
    });

    test('a payment the proxy refuses bounces back onto the balance', async () => {
        await open();
        // Close the proxy completely: it then refuses payments.
        await send(operator, px, FEE, body.startProxyClose());
        chain.now += 3600;
        await send(operator, px, FEE, body.finishProxyClose());
        const r = await send(stranger, ch, FEE, body.pay(pay(toNano('1'), 1)));
        assert.equal(exitOn(r, px.address), ERR.notOpen);
        const s = await state();
        assert.equal(s.balance, toNano('5'));
        assert.equal(s.collected, 0n);
        assert.equal(s.charged, toNano('1'));
    });

    test('a forged ReleaseVerified from anyone but the proxy is refused', async () => {
        await open();
        const r = await send(stranger, ch, FEE, body.releaseVerified(keyInt(client), 0n));
        assert.equal(exitOn(r, ch.address), ERR.notOwner);
        assert.equal((await state()).status, STATUS.open);
    });
});

describe('closing', () => {
    test('without the proxy: the part above the stake now, the stake after the delay', async () => {
        await open();
        const r = await send(owner, ch, FEE, body.close());
        assert.equal(exitOn(r, ch.address), 0);
        let s = await state();
        assert.equal(s.status, STATUS.closing);
        assert.equal(s.balance, MIN_STAKE);
        assert.equal(s.releaseAt, chain.now + DELAY);
        assert.equal(exitOn(await send(owner, ch, FEE, body.close()), ch.address), ERR.alreadyClosing);
        // The proxy still collects the client's newest payment during the delay.
        assert.equal(exitOn(await send(stranger, ch, FEE, body.pay(pay(toNano('0.4'), 1))), ch.address), 0);
        assert.equal(exitOn(await send(owner, ch, FEE, body.finishClose()), ch.address), ERR.tooEarly);
        chain.now += DELAY - 1;
        assert.equal(exitOn(await send(owner, ch, FEE, body.finishClose()), ch.address), ERR.tooEarly);
        chain.now += 1;
        assert.equal(exitOn(await send(stranger, ch, FEE, body.finishClose()), ch.address), ERR.notOwner);
        const finish = await send(owner, ch, FEE, body.finishClose());
        assert.equal(exitOn(finish, ch.address), 0);
        s = await state();
        assert.equal(s.status, STATUS.closed);
        assert.equal(s.balance, 0n);
        // The stake left, plus the fee reserve above the storage reserve.
        assert.ok(paidTo(finish, ch.address, owner.address) >= MIN_STAKE - toNano('0.4'));
        // The channel stays (with its storage reserve) so that old vouchers stay spent.
        assert.equal(exitOn(await send(stranger, ch, FEE, body.pay(pay(toNano('0.4'), 1))), ch.address), ERR.voucherNotNewer);
        assert.equal(exitOn(await send(owner, ch, FEE, body.finishClose()), ch.address), ERR.notClosing);
    });

    test('with the proxy\'s release: at once, once the client\'s payments cover it', async () => {
        await open();
        await send(stranger, ch, FEE, body.pay(pay(toNano('1'), 1)));
        assert.equal(exitOn(await send(owner, ch, FEE, body.closeWithRelease(release(toNano('2'), 5))), ch.address), ERR.releaseAhead);
        assert.equal(exitOn(await send(owner, ch, FEE, body.closeWithRelease(release(toNano('1'), 5, { isFinal: false }))), ch.address), ERR.voucherNotFinal);
        const forged = await send(owner, ch, FEE, body.closeWithRelease(release(toNano('1'), 5, { signer: client })));
        assert.equal(exitOn(forged, px.address), ERR.badSignature);
        assert.equal((await state()).status, STATUS.open);
        assert.equal(exitOn(await send(stranger, ch, FEE, body.closeWithRelease(release(toNano('1'), 5))), ch.address), ERR.notOwner);
        const r = await send(owner, ch, FEE, body.closeWithRelease(release(toNano('1'), 5)));
        assert.equal(exitOn(r, px.address), 0);
        const s = await state();
        assert.equal(s.status, STATUS.closed);
        assert.equal(s.balance, 0n);
        assert.ok(paidTo(r, ch.address, owner.address) >= toNano('4'));
    });

    test('a release works during the delay too; a closed channel takes none', async () => {
        await open();
        await send(owner, ch, FEE, body.close());
        assert.equal(exitOn(await send(owner, ch, FEE, body.closeWithRelease(release(0n, 1))), px.address), 0);
        assert.equal((await state()).status, STATUS.closed);
        assert.equal(exitOn(await send(owner, ch, FEE, body.closeWithRelease(release(0n, 1))), ch.address), ERR.notOpen);
        assert.equal(exitOn(await send(owner, ch, FEE, body.close()), ch.address), ERR.notOpen);
    });

    test('a reopened channel keeps its voucher history', async () => {
        await open();
        await send(stranger, ch, FEE, body.pay(pay(toNano('1'), 1)));
        await send(owner, ch, FEE, body.closeWithRelease(release(toNano('1'), 1)));
        assert.equal(exitOn(await open(), ch.address), 0);
        assert.equal(exitOn(await send(stranger, ch, FEE, body.pay(pay(toNano('1'), 1))), ch.address), ERR.voucherNotNewer);
        assert.equal(exitOn(await send(stranger, ch, FEE, body.pay(pay(toNano('1.5'), 2))), ch.address), 0);
        assert.equal((await state()).balance, toNano('4.5'));
    });
});

describe('bounced payments', () => {
    test('a payment bouncing after the channel closed goes back to the client\'s wallet', async () => {
        await open();
        // Close the proxy: it will refuse the payment.
        await send(operator, px, FEE, body.startProxyClose());
        chain.now += 3600;
        await send(operator, px, FEE, body.finishProxyClose());
        await send(owner, ch, FEE, body.close());
        // The payment leaves the channel; before the proxy's refusal comes back, the channel closes.
        const steps = await chain.sendMessageIter(internal({ from: stranger.address, to: ch.address, value: FEE, body: body.pay(pay(toNano('0.5'), 1)) }), { allowParallel: true });
        const first = await steps.next();
        assert.equal(flattenTransaction(first.value).exitCode, 0);
        chain.now += DELAY;
        assert.equal(exitOn(await send(owner, ch, FEE, body.finishClose()), ch.address), 0);
        assert.equal((await state()).status, STATUS.closed);
        const rest = [];
        for (let step = await steps.next(); !step.done; step = await steps.next()) rest.push(flattenTransaction(step.value));
        assert.equal(rest[0].exitCode, ERR.notOpen);
        const back = rest.find((t) => t.from?.equals(ch.address) && t.to?.equals(owner.address));
        assert.equal(back?.value, toNano('0.5'));
        const s = await state();
        assert.deepEqual([s.balance, s.collected, s.charged], [0n, 0n, toNano('0.5')]);
    });
});
