// Wrappers for the Cocoon contracts in @ton/sandbox: initial data, message bodies (the TL-B of
// docs/contracts.md), get-methods, and the voucher bytes of cocoon-ledger's `Voucher::signing_bytes`.

import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { Address, beginCell, Cell, contractAddress, Dictionary, toNano } from '@ton/core';
import { keyPairFromSeed, sign } from '@ton/crypto';
import { flattenTransaction } from '@ton/test-utils';

const here = dirname(fileURLToPath(import.meta.url));

export const code = (name) => Cell.fromBoc(readFileSync(join(here, '..', 'build', `${name}.boc`)))[0];

export const FEE = toNano('0.05');
export const STATUS = { closed: 0, open: 1, closing: 2 };
export const ERR = {
    notOwner: 100, zeroAmount: 101, insufficientFunds: 102, stakeTooLow: 103, contractExists: 104,
    notOpen: 105, withdrawBelowStake: 106, badSignature: 107, voucherNotNewer: 108,
    voucherDecreases: 109, voucherNotFinal: 110, releaseAhead: 111, insufficientProxyFunds: 112,
    tooEarly: 113, notClosing: 114, alreadyClosing: 115, keyAlreadyCurrent: 116, notEarlierKey: 117,
    feeNotCovered: 118, notRegistryOwner: 119, versionNotNewer: 120, unknownOp: 0xffff,
};
export const OP = {
    openChannel: 0x43430001, topUp: 0x43430002, withdraw: 0x43430003, pay: 0x43430004,
    close: 0x43430005, closeWithRelease: 0x43430006, finishClose: 0x43430007,
    openProxy: 0x43510001, addStake: 0x43510002, authorizeKey: 0x43510003, revokeKey: 0x43510004,
    withdrawCommission: 0x43510005, startProxyClose: 0x43510006, finishProxyClose: 0x43510007,
    claim: 0x43510008, channelPayment: 0x43500001, verifyRelease: 0x43500002,
    releaseVerified: 0x43500003,
};
export const KIND = { clientCharge: 1, workerPay: 2, clientPay: 3 };

export const keys = (seed) => keyPairFromSeed(Buffer.alloc(32, seed));
export const keyInt = (kp) => BigInt(`0x${kp.publicKey.toString('hex')}`);
export const accountId = (address) => BigInt(`0x${address.hash.toString('hex')}`);

/** `Voucher::signing_bytes` of cocoon-ledger: 100 bytes. */
export function voucherBytes({ kind, proxy, counterparty, cumulative, seqno, isFinal = false }) {
    const out = Buffer.alloc(100);
    Buffer.from('cocoon-voucher-v1\0').copy(out, 0);
    out[18] = kind;
    Buffer.from(proxy.toString(16).padStart(64, '0'), 'hex').copy(out, 19);
    Buffer.from(counterparty.toString(16).padStart(64, '0'), 'hex').copy(out, 51);
    out.writeBigUInt64BE(BigInt(cumulative), 83);
    out.writeBigUInt64BE(BigInt(seqno), 91);
    out[99] = isFinal ? 1 : 0;
    return out;
}

export function signVoucher(secretKey, voucher) {
    return { ...voucher, signature: sign(voucherBytes(voucher), secretKey) };
}

const storeSigned = (v) => (b) => b
    .storeUint(BigInt(v.cumulative), 64).storeUint(BigInt(v.seqno), 64).storeBit(!!v.isFinal)
    .storeBuffer(v.signature);

export const body = {
    openChannel: (amount, stake) => beginCell().storeUint(OP.openChannel, 32).storeUint(amount, 64).storeUint(stake, 64).endCell(),
    topUp: (amount) => beginCell().storeUint(OP.topUp, 32).storeUint(amount, 64).endCell(),
    withdraw: (amount) => beginCell().storeUint(OP.withdraw, 32).storeUint(amount, 64).endCell(),
    pay: (v) => beginCell().storeUint(OP.pay, 32).store(storeSigned(v)).endCell(),
    close: () => beginCell().storeUint(OP.close, 32).endCell(),
    closeWithRelease: (v) => beginCell().storeUint(OP.closeWithRelease, 32).store(storeSigned(v)).endCell(),
    finishClose: () => beginCell().storeUint(OP.finishClose, 32).endCell(),
    openProxy: (stake, key) => beginCell().storeUint(OP.openProxy, 32).storeUint(stake, 64).storeUint(key, 256).endCell(),
    addStake: (amount) => beginCell().storeUint(OP.addStake, 32).storeUint(amount, 64).endCell(),
    authorizeKey: (key) => beginCell().storeUint(OP.authorizeKey, 32).storeUint(key, 256).endCell(),
    revokeKey: (key) => beginCell().storeUint(OP.revokeKey, 32).storeUint(key, 256).endCell(),
    withdrawCommission: (amount) => beginCell().storeUint(OP.withdrawCommission, 32).storeUint(amount, 64).endCell(),
    startProxyClose: () => beginCell().storeUint(OP.startProxyClose, 32).endCell(),
    finishProxyClose: () => beginCell().storeUint(OP.finishProxyClose, 32).endCell(),
    claim: (worker, v) => beginCell().storeUint(OP.claim, 32).storeUint(worker, 256).store(storeSigned(v)).endCell(),
    channelPayment: (amount, clientKey) => beginCell().storeUint(OP.channelPayment, 32).storeUint(amount, 64).storeUint(clientKey, 256).endCell(),
    verifyRelease: (clientKey, v) => beginCell().storeUint(OP.verifyRelease, 32).storeUint(clientKey, 256).store(storeSigned(v)).endCell(),
    releaseVerified: (clientKey, cumulative) => beginCell().storeUint(OP.releaseVerified, 32).storeUint(clientKey, 256).storeUint(cumulative, 64).endCell(),
};

/** A contract at the address of its code and initial data. */
class Deployed {
    constructor(name, data) {
        this.init = { code: code(name), data };
        this.address = contractAddress(0, this.init);
    }
}

export function channel({ proxy, owner, clientKey, minStake = 0n, closeDelay = 600 }) {
    const params = beginCell().storeAddress(proxy).storeAddress(owner).storeUint(clientKey, 256)
        .storeUint(minStake, 64).storeUint(closeDelay, 32).endCell();
    const data = beginCell().storeRef(params).storeUint(0, 2).storeUint(0, 32)
        .storeUint(0, 64).storeUint(0, 64).storeUint(0, 64).storeUint(0, 64).storeUint(0, 64).endCell();
    return new Deployed('client_channel', data);
}

export function proxy({ owner, root, minStake = 0n, closeDelay = 3600 }) {
    const params = beginCell().storeAddress(owner).storeAddress(root).storeUint(minStake, 64)
        .storeUint(closeDelay, 32).endCell();
    const data = beginCell().storeRef(params).storeUint(0, 2).storeUint(0, 32).storeUint(0, 64)
        .storeUint(0, 64).storeUint(0, 32).storeBit(false).storeBit(false).endCell();
    return new Deployed('proxy', data);
}

/** Sends `msgBody` with `value` from a sandbox treasury (deploying `target` with the first message). */
export async function send(from, target, value, msgBody, bounce = true) {
    return from.send({ to: target.address, value, body: msgBody, init: target.init, bounce });
}

/** The flattened transaction of the message `result` delivered to `address` first. */
export function txOn(result, address) {
    const tx = result.transactions.map(flattenTransaction).find((t) => t.to?.equals(address));
    if (!tx) throw new Error(`no transaction on ${address}`);
    return tx;
}

/** Exit code of the compute phase on `address` (0 = accepted). */
export const exitOn = (result, address) => txOn(result, address).exitCode;

export async function channelState(blockchain, ch) {
    const { stack } = await blockchain.provider(ch.address).get('channel_state', []);
    const [status, releaseAt, balance, stake, charged, collected, voucherSeqno] =
        Array.from({ length: 7 }, () => stack.readBigNumber());
    return { status: Number(status), releaseAt: Number(releaseAt), balance, stake, charged, collected, voucherSeqno };
}

export async function proxyState(blockchain, px) {
    const { stack } = await blockchain.provider(px.address).get('proxy_state', []);
    const [status, releaseAt, stake, pool] = Array.from({ length: 4 }, () => stack.readBigNumber());
    return { status: Number(status), releaseAt: Number(releaseAt), stake, pool };
}

export async function voucherKeys(blockchain, px) {
    const { stack } = await blockchain.provider(px.address).get('voucher_keys', []);
    const tuple = stack.readTuple();
    const out = [];
    while (tuple.remaining) out.push(tuple.readBigNumber());
    return out;
}

export async function workerPaid(blockchain, px, worker) {
    const { stack } = await blockchain.provider(px.address).get('worker_paid', [{ type: 'int', value: worker }]);
    return { paid: stack.readBigNumber(), seqno: stack.readBigNumber() };
}

export { Address, Dictionary, toNano };

/** Value of the messages `from` sent `to` in `result` (what actually moved, fees excluded). */
export function paidTo(result, from, to) {
    return result.transactions.map(flattenTransaction)
        .filter((t) => t.from?.equals(from) && t.to?.equals(to))
        .reduce((sum, t) => sum + (t.value ?? 0n), 0n);
}

export const ROOT_OP = { updateRegistry: 0x43520001 };

/** Registry params in the layout of root.tolk's RegistryParams. */
export function registryParams(p) {
    return beginCell().storeUint(p.pricePerToken, 64).storeUint(p.workerFeePerToken, 64)
        .storeUint(p.promptMultiplier, 32).storeUint(p.cachedMultiplier, 32)
        .storeUint(p.completionMultiplier, 32).storeUint(p.reasoningMultiplier, 32)
        .storeUint(p.clientDelayBeforeClose, 32).storeUint(p.proxyDelayBeforeClose, 32)
        .storeUint(p.minClientStake, 64).storeUint(p.minProxyStake, 64).endCell();
}

const bytesCell = (text) => beginCell().storeBuffer(Buffer.from(text)).endCell();

/** The allow-lists: image hashes (bigint), models {hash: name}, proxies [{seqno, address, worker, client}]. */
export function registryLists({ proxyImages = [], workerImages = [], models = {}, proxies = [] }) {
    const set = (hashes) => {
        const d = Dictionary.empty(Dictionary.Keys.BigUint(256), Dictionary.Values.Bool());
        for (const h of hashes) d.set(h, true);
        return d;
    };
    const m = Dictionary.empty(Dictionary.Keys.BigUint(256), Dictionary.Values.Cell());
    for (const [hash, name] of Object.entries(models)) m.set(BigInt(hash), bytesCell(name));
    const px = Dictionary.empty(Dictionary.Keys.BigUint(64), Dictionary.Values.Cell());
    for (const p of proxies) {
        px.set(BigInt(p.seqno), beginCell().storeAddress(p.address).storeRef(bytesCell(p.worker)).storeRef(bytesCell(p.client)).endCell());
    }
    return beginCell().storeDict(set(proxyImages)).storeDict(set(workerImages)).storeDict(m).storeDict(px).endCell();
}

export function root({ owner, params, lists = registryLists({}) }) {
    const data = beginCell().storeAddress(owner).storeUint(0, 64).storeRef(params).storeRef(lists).endCell();
    return new Deployed('root', data);
}

export const updateRegistry = (version, owner, params, lists) => beginCell().storeUint(ROOT_OP.updateRegistry, 32)
    .storeUint(version, 64).storeAddress(owner).storeRef(params).storeRef(lists).endCell();

/**
 * Checks that `from` paid `to` exactly `amount` plus at most the fee the request brought (payouts
 * carry what is left of the request's value back to the payee).
 */
export function assertPaid(result, from, to, amount) {
    const got = paidTo(result, from, to);
    if (got < amount || got > amount + FEE) {
        throw new Error(`paid ${got}, expected ${amount} plus at most the fee ${FEE}`);
    }
}
