// The devnet answers the TON HTTP API v2 as toncenter does, over a real TVM (@ton/sandbox).

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, test } from 'node:test';

import { external, internal, SendMode, storeMessage, beginCell, toNano, Address, Cell } from '@ton/core';
import { keyPairFromSeed } from '@ton/crypto';
import { WalletContractV5R1 } from '@ton/ton';

import { start } from '../devnet/server.js';

let devnet;

before(async () => {
    devnet = await start();
});

after(() => devnet.server.close());

async function call(method, { query, body } = {}) {
    const url = new URL(`${devnet.url}/api/v2/${method}`);
    for (const [key, value] of Object.entries(query ?? {})) {
        url.searchParams.set(key, value);
    }
    const response = await fetch(url, body === undefined ? {} : {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(body),
    });
    return { status: response.status, json: await response.json() };
}

function wallet(seedByte) {
    const keys = keyPairFromSeed(Buffer.alloc(32, seedByte));
    return { keys, contract: WalletContractV5R1.create({ workchain: 0, publicKey: keys.publicKey }) };
}

function transferBoc(from, seqno, to, value) {
    const body = from.contract.createTransfer({
        seqno,
        secretKey: from.keys.secretKey,
        sendMode: SendMode.PAY_GAS_SEPARATELY,
        messages: [internal({ to, value, bounce: false })],
    });
    const message = external({ to: from.contract.address, init: seqno === 0 ? from.contract.init : undefined, body });
    return beginCell().store(storeMessage(message)).endCell().toBoc().toString('base64');
}

test('a wallet funded by the faucet deploys, transfers, and its history reads back', async () => {
    const alice = wallet(1);
    const bob = wallet(2).contract.address;
    const address = alice.contract.address.toString();

    let info = await call('getAddressInformation', { query: { address } });
    assert.equal(info.json.ok, true);
    assert.equal(info.json.result.state, 'uninitialized');
    assert.equal(info.json.result.balance, '0');

    const funded = await call('devnet/faucet', { body: { address, amount: toNano('5').toString() } });
    assert.equal(funded.json.ok, true, JSON.stringify(funded.json));
    info = await call('getAddressInformation', { query: { address } });
    assert.equal(info.json.result.balance, toNano('5').toString());

    const boc = transferBoc(alice, 0, bob, toNano('1'));
    const sent = await call('sendBoc', { body: { boc } });
    assert.equal(sent.json.ok, true, JSON.stringify(sent.json));
    info = await call('getAddressInformation', { query: { address } });
    assert.equal(info.json.result.state, 'active');
    assert.ok(info.json.result.code.length > 0);

    const seqno = await call('runGetMethod', { body: { address, method: 'seqno', stack: [] } });
    assert.equal(seqno.json.result.exit_code, 0);
    assert.deepEqual(seqno.json.result.stack, [['num', '0x1']]);

    const bobInfo = await call('getAddressInformation', { query: { address: bob.toRawString() } });
    assert.equal(bobInfo.json.result.balance, toNano('1').toString());

    // The same message again: its seqno is used, so the wallet does not accept it.
    const replay = await call('sendBoc', { body: { boc } });
    assert.equal(replay.status, 500);
    assert.match(replay.json.error, /External message was not accepted/);

    const history = await call('getTransactions', { query: { address, limit: '10' } });
    assert.equal(history.json.ok, true, JSON.stringify(history.json));
    assert.equal(history.json.result.length, 2, 'the faucet credit and the transfer');
    const transfer = history.json.result[0];
    assert.equal(transfer.compute_exit_code, 0);
    assert.equal(transfer.out_msgs.length, 1);
    assert.equal(Address.parse(transfer.out_msgs[0].destination).equals(bob), true);
    assert.equal(transfer.out_msgs[0].value, toNano('1').toString());
});

test('time follows the clock and jumps when asked', async () => {
    const before = (await call('getMasterchainInfo')).json.result.devnet_now;
    assert.ok(Math.abs(before - Date.now() / 1000) < 5, 'chain time starts at the clock');
    const moved = await call('devnet/advance', { body: { seconds: 3600 } });
    assert.ok(moved.json.result.now >= before + 3600);
    const after = (await call('getMasterchainInfo')).json.result.devnet_now;
    assert.ok(after >= before + 3600 && after < before + 3700);
});

test('hostile input gets a clear error, never a crash', async () => {
    const cases = [
        ['getAddressInformation', { query: { address: 'not an address' } }, /address/],
        ['getAddressInformation', { query: {} }, /address/],
        ['sendBoc', { body: { boc: 'AAAA' } }, /boc/],
        ['sendBoc', { body: {} }, /boc/],
        ['runGetMethod', { body: { address: wallet(1).contract.address.toString(), method: 'x; rm', stack: [] } }, /method/],
        ['runGetMethod', { body: { address: wallet(1).contract.address.toString(), method: 'seqno', stack: [['num', '1'.repeat(200)]] } }, /number/],
        ['getTransactions', { query: { address: wallet(1).contract.address.toString(), limit: '100000' } }, /limit/],
        ['devnet/faucet', { body: { address: wallet(1).contract.address.toString(), amount: '-5' } }, /amount/],
        ['devnet/advance', { body: { seconds: -1 } }, /seconds/],
    ];
    for (const [method, request, message] of cases) {
        const { status, json } = await call(method, request);
        assert.equal(json.ok, false, `${method} ${JSON.stringify(request)}`);
        assert.equal(status, 416, `${method}: ${json.error}`);
        assert.match(json.error, message);
    }
    const unknown = await call('getConfigAll');
    assert.equal(unknown.status, 404);
    // Still serving.
    assert.equal((await call('getMasterchainInfo')).json.ok, true);
});

test('the committed root deploys with a given owner and reads back', async () => {
    const owner = wallet(20).contract.address;
    const deploy = (params) => fetch(`${devnet.url}/devnet/deploy-root`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ owner: owner.toString(), params }),
    }).then(async (response) => ({ status: response.status, json: await response.json() }));

    const { json } = await deploy({ client_delay_before_close: 600, min_proxy_stake: '10000000000' });
    assert.equal(json.ok, true, JSON.stringify(json));
    assert.equal(json.result.code_hash, readFileSync(new URL('../build/root.hash', import.meta.url), 'utf8').trim());
    const address = json.result.address;
    const get = async (method) => (await call('runGetMethod', { body: { address, method, stack: [] } })).json.result;
    assert.deepEqual((await get('registry_version')).stack, [['num', '0x0']]);
    const ownerSlice = (await get('registry_owner')).stack[0][1].bytes;
    assert.ok(Cell.fromBoc(Buffer.from(ownerSlice, 'base64'))[0].beginParse().loadAddress().equals(owner));
    const params = (await get('registry_params')).stack.map(([, value]) => BigInt(value));
    assert.equal(params[6], 600n);
    assert.equal(params[9], 10_000_000_000n);

    // The same owner and params: the same contract, topped up.
    assert.equal((await deploy({ client_delay_before_close: 600, min_proxy_stake: '10000000000' })).json.result.address, address);
    // Hostile params are refused by name.
    const refused = await deploy({ prompt_multiplier: 2 ** 32 });
    assert.equal(refused.status, 416);
    assert.match(refused.json.error, /prompt_multiplier/);
    assert.equal((await deploy([1, 2])).status, 416);
});
