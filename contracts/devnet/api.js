// The TON HTTP API v2 subset Cocoon's TON backend uses, answered from an @ton/sandbox blockchain.
//
// Shapes follow toncenter's JSON API (`{ok: true, result}` / `{ok: false, error, code}`), so the
// backend talks to this devnet exactly as it talks to toncenter or a self-hosted ton-http-api.
// Chain time follows the wall clock, plus whatever `/devnet/advance` added: a test of a close delay
// jumps over it instead of waiting.

import { readFileSync } from 'node:fs';

import { Address, Cell, beginCell, contractAddress, loadMessage, toNano } from '@ton/core';
import { Blockchain, internal } from '@ton/sandbox';

/** An error answered as `{ok: false, error, code}`. */
export class ApiError extends Error {
    constructor(code, message) {
        super(message);
        this.code = code;
    }
}

function parseAddress(text) {
    if (typeof text !== 'string' || text.length === 0 || text.length > 100) {
        throw new ApiError(416, 'address: expected a TON address (raw or user-friendly)');
    }
    try {
        return Address.parse(text);
    } catch (error) {
        throw new ApiError(416, `address: ${error.message}`);
    }
}

function parseBoc(text, what) {
    if (typeof text !== 'string' || text.length === 0) {
        throw new ApiError(416, `${what}: expected a base64 bag of cells`);
    }
    try {
        const cells = Cell.fromBoc(Buffer.from(text, 'base64'));
        if (cells.length !== 1) {
            throw new Error(`${cells.length} root cells`);
        }
        return cells[0];
    } catch (error) {
        throw new ApiError(416, `${what}: not a bag of one cell (${error.message})`);
    }
}

function parseLimit(text, fallback, max) {
    if (text === undefined || text === null) {
        return fallback;
    }
    const value = Number(text);
    if (!Number.isInteger(value) || value < 1 || value > max) {
        throw new ApiError(416, `limit: expected an integer from 1 to ${max}`);
    }
    return value;
}

/** The committed root code (`npm run build`), as the Rust side embeds it. */
const ROOT_CODE = Cell.fromBoc(readFileSync(new URL('../build/root.boc', import.meta.url)))[0];

/** What a deployed root starts with: its storage and fee reserve. */
const ROOT_DEPLOY_VALUE = toNano('1');

/** root.tolk's `RegistryParams`, in order, with their widths. */
const REGISTRY_PARAMS = [
    ['price_per_token', 64], ['worker_fee_per_token', 64], ['prompt_multiplier', 32],
    ['cached_multiplier', 32], ['completion_multiplier', 32], ['reasoning_multiplier', 32],
    ['client_delay_before_close', 32], ['proxy_delay_before_close', 32], ['min_client_stake', 64],
    ['min_proxy_stake', 64],
];

function parseRegistryParams(params) {
    if (params !== undefined && (typeof params !== 'object' || params === null || Array.isArray(params))) {
        throw new ApiError(416, 'params: expected an object of the registry parameters');
    }
    const builder = beginCell();
    for (const [name, bits] of REGISTRY_PARAMS) {
        const text = String(params?.[name] ?? 0);
        if (!/^[0-9]{1,20}$/.test(text) || BigInt(text) >= 1n << BigInt(bits)) {
            throw new ApiError(416, `params.${name}: expected an unsigned ${bits}-bit integer`);
        }
        builder.storeUint(BigInt(text), bits);
    }
    return builder.endCell();
}

/** Where faucet credits come from (a fixed address no key controls). */
const FAUCET = new Address(0, Buffer.alloc(32, 0xfa));

const boc = (cell) => cell.toBoc().toString('base64');

function transactionId(lt, hash) {
    return { '@type': 'internal.transactionId', lt: lt.toString(), hash: Buffer.from(hash).toString('base64') };
}

function messageJson(message) {
    if (!message) {
        return null;
    }
    const info = message.info;
    const body = message.body ?? new Cell();
    return {
        '@type': 'raw.message',
        source: info.src && info.type !== 'external-in' ? info.src.toString() : '',
        destination: info.dest && info.type !== 'external-out' ? info.dest.toString() : '',
        value: info.type === 'internal' ? info.value.coins.toString() : '0',
        fwd_fee: info.type === 'internal' ? info.forwardFee.toString() : '0',
        ihr_fee: info.type === 'internal' ? info.ihrFee.toString() : '0',
        created_lt: info.type === 'external-in' ? '0' : info.createdLt.toString(),
        body_hash: body.hash().toString('base64'),
        msg_data: { '@type': 'msg.dataRaw', body: boc(body), init_state: message.init ? boc(beginCell().endCell()) : '' },
        bounce: info.type === 'internal' ? info.bounce : false,
        bounced: info.type === 'internal' ? info.bounced : false,
    };
}

function transactionJson(tx) {
    const description = tx.description;
    const compute = description.type === 'generic' ? description.computePhase : undefined;
    return {
        '@type': 'raw.transaction',
        address: { '@type': 'accountAddress', account_address: tx.inMessage?.info.dest?.toString() ?? '' },
        utime: tx.now,
        data: boc(tx.raw),
        transaction_id: transactionId(tx.lt, tx.hash()),
        fee: tx.totalFees.coins.toString(),
        storage_fee: '0',
        other_fee: '0',
        in_msg: messageJson(tx.inMessage),
        out_msgs: tx.outMessages.values().map(messageJson),
        // Not in toncenter's answer (it is in `data`), but every client decodes it from there:
        // given here too so a reader need not parse the transaction to learn why it failed.
        compute_exit_code: compute && compute.type === 'vm' ? compute.exitCode : null,
        aborted: description.type === 'generic' ? description.aborted : null,
    };
}

function stackItemIn(item) {
    if (!Array.isArray(item) || item.length !== 2) {
        throw new ApiError(416, 'stack: each entry is [type, value]');
    }
    const [type, value] = item;
    switch (type) {
        case 'num':
        case 'int': {
            let text = String(value);
            const negative = text.startsWith('-');
            if (negative) {
                text = text.slice(1);
            }
            if (!/^(0x[0-9a-fA-F]{1,64}|[0-9]{1,78})$/.test(text)) {
                throw new ApiError(416, `stack: bad number ${String(value).slice(0, 80)}`);
            }
            const number = BigInt(text);
            return { type: 'int', value: negative ? -number : number };
        }
        case 'cell':
        case 'tvm.Cell':
            return { type: 'cell', cell: parseBoc(typeof value === 'object' ? value?.bytes : value, 'stack cell') };
        case 'slice':
        case 'tvm.Slice':
            return { type: 'slice', cell: parseBoc(typeof value === 'object' ? value?.bytes : value, 'stack slice') };
        default:
            throw new ApiError(416, `stack: unsupported entry type ${String(type).slice(0, 40)}`);
    }
}

function stackItemOut(item) {
    switch (item.type) {
        case 'int':
            return ['num', (item.value < 0n ? '-0x' + (-item.value).toString(16) : '0x' + item.value.toString(16))];
        case 'null':
            return ['null', null];
        case 'cell':
            return ['cell', { bytes: boc(item.cell) }];
        case 'slice':
            return ['slice', { bytes: boc(item.cell) }];
        case 'builder':
            return ['builder', { bytes: boc(item.cell) }];
        case 'tuple':
            return ['tuple', { elements: item.items.map(stackItemOut) }];
        default:
            return ['unsupported', item.type];
    }
}

/** The devnet: a sandbox blockchain, a faucet, and the API v2 methods over them. */
export class Devnet {
    static async create() {
        const devnet = new Devnet(await Blockchain.create());
        devnet.tick();
        return devnet;
    }

    constructor(blockchain) {
        this.blockchain = blockchain;
        // Seconds added to the wall clock by `advance`.
        this.offset = 0;
        // Every transaction by the account it ran on (the sandbox keeps no per-account history).
        this.history = new Map();
        // One "block" per message accepted: what getMasterchainInfo counts.
        this.seqno = 1;
    }

    /** Brings chain time up to the clock; called before every method. */
    tick() {
        const now = Math.floor(Date.now() / 1000) + this.offset;
        if (this.blockchain.now === undefined || now > this.blockchain.now) {
            this.blockchain.now = now;
        }
    }

    async getMasterchainInfo() {
        return {
            '@type': 'blocks.masterchainInfo',
            last: { '@type': 'ton.blockIdExt', workchain: -1, shard: '-9223372036854775808', seqno: this.seqno },
            devnet_now: this.blockchain.now,
        };
    }

    async getAddressInformation(query) {
        const address = parseAddress(query.address);
        const contract = await this.blockchain.getContract(address);
        const state = contract.accountState;
        const active = state?.type === 'active';
        return {
            '@type': 'raw.fullAccountState',
            balance: contract.balance.toString(),
            code: active && state.state.code ? boc(state.state.code) : '',
            data: active && state.state.data ? boc(state.state.data) : '',
            last_transaction_id: transactionId(contract.lastTransactionLt, bigintHash(contract.lastTransactionHash)),
            frozen_hash: '',
            sync_utime: this.blockchain.now,
            state: active ? 'active' : state?.type === 'frozen' ? 'frozen' : 'uninitialized',
        };
    }

    async getTransactions(query) {
        const address = parseAddress(query.address);
        const limit = parseLimit(query.limit, 10, 100);
        // Newest first, as toncenter answers; from (lt, hash) when given.
        let history = (this.history.get(address.toRawString()) ?? []).slice().reverse();
        if (query.lt !== undefined || query.hash !== undefined) {
            if (!/^[0-9]{1,20}$/.test(String(query.lt)) || typeof query.hash !== 'string') {
                throw new ApiError(416, 'lt and hash: expected a logical time and a base64 transaction hash');
            }
            const from = history.findIndex((tx) => tx.lt === BigInt(query.lt) && tx.hash().toString('base64') === query.hash);
            if (from < 0) {
                throw new ApiError(500, 'Transaction with provided lt and hash not found.');
            }
            history = history.slice(from);
        }
        return history.slice(0, limit).map(transactionJson);
    }

    /** Keeps each transaction of `result` in its account's history. */
    record(result) {
        for (const tx of result.transactions) {
            const dest = tx.inMessage?.info.dest;
            if (dest && Address.isAddress(dest)) {
                const key = dest.toRawString();
                if (!this.history.has(key)) {
                    this.history.set(key, []);
                }
                this.history.get(key).push(tx);
            }
        }
        this.seqno += 1;
    }

    async sendBoc(body) {
        const cell = parseBoc(body?.boc, 'boc');
        let message;
        try {
            message = loadMessage(cell.beginParse());
        } catch (error) {
            throw new ApiError(416, `boc: not a message (${error.message})`);
        }
        if (message.info.type !== 'external-in') {
            throw new ApiError(416, 'boc: only inbound external messages can be sent');
        }
        try {
            this.record(await this.blockchain.sendMessage(cell));
        } catch (error) {
            // As a liteserver answers an external message the contract did not accept.
            throw new ApiError(500, `cannot apply external message to current state: External message was not accepted (${error.message.split('\n')[0]})`);
        }
        return { '@type': 'raw.extMessageInfo', hash: message.body.hash().toString('base64'), hash_norm: cell.hash().toString('base64') };
    }

    async runGetMethod(body) {
        const address = parseAddress(body?.address);
        const method = body?.method;
        if (!(typeof method === 'string' && /^[A-Za-z_][A-Za-z0-9_]{0,127}$/.test(method)) && !Number.isInteger(method)) {
            throw new ApiError(416, 'method: expected a get-method name or id');
        }
        const stackIn = body?.stack ?? [];
        if (!Array.isArray(stackIn) || stackIn.length > 64) {
            throw new ApiError(416, 'stack: expected at most 64 entries');
        }
        const stack = stackIn.map(stackItemIn);
        const contract = await this.blockchain.getContract(address);
        if (contract.accountState?.type !== 'active') {
            // As toncenter answers for an account with no code.
            return { '@type': 'smc.runResult', gas_used: 0, stack: [], exit_code: -13 };
        }
        try {
            const result = await this.blockchain.runGetMethod(address, method, stack);
            return { '@type': 'smc.runResult', gas_used: Number(result.gasUsed), stack: result.stack.map(stackItemOut), exit_code: result.exitCode };
        } catch (error) {
            if (typeof error.exitCode === 'number') {
                return { '@type': 'smc.runResult', gas_used: Number(error.gasUsed ?? 0), stack: [], exit_code: error.exitCode };
            }
            throw new ApiError(500, `runGetMethod: ${error.message.split('\n')[0]}`);
        }
    }

    /** Devnet only: sends `amount` nano-TON from the faucet to `address` (bounce off). */
    async faucetSend(body) {
        const address = parseAddress(body?.address);
        const amount = String(body?.amount ?? '');
        if (!/^[0-9]{1,20}$/.test(amount) || BigInt(amount) === 0n || BigInt(amount) > toNano('1000000')) {
            throw new ApiError(416, 'amount: expected nano-TON from 1 to 10^15');
        }
        // The sandbox accepts an internal message from any address: the faucet mints.
        const result = await this.blockchain.sendMessage(internal({ from: FAUCET, to: address, value: BigInt(amount), bounce: false }));
        this.record(result);
        return { sent: amount, transactions: result.transactions.length };
    }

    /**
     * Devnet only: deploys the committed root code with `owner`, version 0, the given `params`
     * (zero where left out) and empty lists, funded by the faucet; answers its address. The same
     * owner and params give the same address, so a second call only tops it up.
     */
    async deployRoot(body) {
        const owner = parseAddress(body?.owner);
        const params = parseRegistryParams(body?.params);
        const emptyLists = beginCell().storeBit(false).storeBit(false).storeBit(false).storeBit(false).endCell();
        const data = beginCell().storeAddress(owner).storeUint(0, 64).storeRef(params).storeRef(emptyLists).endCell();
        const init = { code: ROOT_CODE, data };
        const address = contractAddress(0, init);
        const result = await this.blockchain.sendMessage(internal({ from: FAUCET, to: address, value: ROOT_DEPLOY_VALUE, bounce: false, stateInit: init }));
        this.record(result);
        const contract = await this.blockchain.getContract(address);
        if (contract.accountState?.type !== 'active') {
            throw new ApiError(500, 'the root did not deploy');
        }
        return { address: address.toRawString(), code_hash: ROOT_CODE.hash().toString('hex') };
    }

    /** Devnet only: moves chain time forward by `seconds` (it keeps following the clock after). */
    async advance(body) {
        const seconds = Number(body?.seconds);
        if (!Number.isInteger(seconds) || seconds < 1 || seconds > 10 * 365 * 86400) {
            throw new ApiError(416, 'seconds: expected an integer from 1 to ten years');
        }
        this.offset += seconds;
        this.tick();
        this.seqno += 1;
        return { now: this.blockchain.now };
    }
}

function bigintHash(value) {
    return Buffer.from(value.toString(16).padStart(64, '0'), 'hex');
}
