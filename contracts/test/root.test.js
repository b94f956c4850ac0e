// The root (registry) contract: owner-only updates with increasing versions, and get-methods that
// read every part back.

import assert from 'node:assert/strict';
import { beforeEach, test } from 'node:test';

import { beginCell, Dictionary } from '@ton/core';
import { Blockchain } from '@ton/sandbox';

import { ERR, exitOn, FEE, registryLists, registryParams, root, send, toNano, updateRegistry } from './contracts.js';

const PARAMS = {
    pricePerToken: 1000n, workerFeePerToken: 800n, promptMultiplier: 10_000, cachedMultiplier: 1_000,
    completionMultiplier: 10_000, reasoningMultiplier: 10_000, clientDelayBeforeClose: 600,
    proxyDelayBeforeClose: 3600, minClientStake: toNano('1'), minProxyStake: toNano('10'),
};

let chain, owner, stranger, registry;

const getParams = async () => {
    const { stack } = await chain.provider(registry.address).get('registry_params', []);
    return Array.from({ length: 10 }, () => stack.readBigNumber());
};
const version = async () => (await chain.provider(registry.address).get('registry_version', [])).stack.readBigNumber();
const allowed = async (method, hash) => (await chain.provider(registry.address).get(method, [{ type: 'int', value: hash }])).stack.readBoolean();

beforeEach(async () => {
    chain = await Blockchain.create();
    owner = await chain.treasury('registry-owner');
    stranger = await chain.treasury('stranger');
    registry = root({ owner: owner.address, params: registryParams(PARAMS) });
    assert.equal(exitOn(await send(owner, registry, FEE, beginCell().endCell(), false), registry.address), 0);
});

test('the deployed registry reads back', async () => {
    assert.equal(await version(), 0n);
    const { stack } = await chain.provider(registry.address).get('registry_owner', []);
    assert.ok(stack.readAddress().equals(owner.address));
    assert.deepEqual(await getParams(), Object.values(PARAMS).map(BigInt));
});

test('the owner replaces it with a higher version; lists read back', async () => {
    const lists = registryLists({
        proxyImages: [0xaan], workerImages: [0xbbn, 0xccn], models: { 7: 'qwen3-0.6b' },
        proxies: [{ seqno: 1, address: stranger.address, worker: 'proxy.example:9000', client: 'proxy.example:8443' }],
    });
    const params = registryParams({ ...PARAMS, pricePerToken: 2000n });
    assert.equal(exitOn(await send(owner, registry, FEE, updateRegistry(3, owner.address, params, lists)), registry.address), 0);
    assert.equal(await version(), 3n);
    assert.equal((await getParams())[0], 2000n);
    assert.equal(await allowed('proxy_image_allowed', 0xaan), true);
    assert.equal(await allowed('proxy_image_allowed', 0xbbn), false);
    assert.equal(await allowed('worker_image_allowed', 0xccn), true);
    const { stack } = await chain.provider(registry.address).get('registry_lists', []);
    stack.readCellOpt();
    stack.readCellOpt();
    const models = Dictionary.loadDirect(Dictionary.Keys.BigUint(256), Dictionary.Values.Cell(), stack.readCellOpt());
    assert.equal(models.get(7n).beginParse().loadBuffer(10).toString(), 'qwen3-0.6b');
    const proxies = Dictionary.loadDirect(Dictionary.Keys.BigUint(64), Dictionary.Values.Cell(), stack.readCellOpt());
    assert.ok(proxies.get(1n).beginParse().loadAddress().equals(stranger.address));
});

test('refusals: a stranger, an old or equal version, malformed parts', async () => {
    const params = registryParams(PARAMS);
    const lists = registryLists({});
    assert.equal(exitOn(await send(stranger, registry, FEE, updateRegistry(1, stranger.address, params, lists)), registry.address), ERR.notRegistryOwner);
    assert.equal(exitOn(await send(owner, registry, FEE, updateRegistry(2, owner.address, params, lists)), registry.address), 0);
    assert.equal(exitOn(await send(owner, registry, FEE, updateRegistry(2, owner.address, params, lists)), registry.address), ERR.versionNotNewer);
    assert.equal(exitOn(await send(owner, registry, FEE, updateRegistry(1, owner.address, params, lists)), registry.address), ERR.versionNotNewer);
    const short = beginCell().storeUint(1, 64).endCell();
    assert.notEqual(exitOn(await send(owner, registry, FEE, updateRegistry(5, owner.address, short, lists)), registry.address), 0);
    assert.equal(await version(), 2n);
});

test('the owner can hand the registry on; the old owner is then refused', async () => {
    const params = registryParams(PARAMS);
    const lists = registryLists({});
    await send(owner, registry, FEE, updateRegistry(1, stranger.address, params, lists));
    assert.equal(exitOn(await send(owner, registry, FEE, updateRegistry(2, owner.address, params, lists)), registry.address), ERR.notRegistryOwner);
    assert.equal(exitOn(await send(stranger, registry, FEE, updateRegistry(2, stranger.address, params, lists)), registry.address), 0);
});
