// The committed code (build/<name>.boc, .hash) is what the sources compile to: the Rust side
// embeds these files, so a source change without `npm run build` must fail here.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { Cell } from '@ton/core';

import { compile, committed, CONTRACTS } from '../build.js';

for (const name of CONTRACTS) {
    test(`${name}: the sources compile to the committed code`, async () => {
        const fresh = await compile(name);
        const old = committed(name);
        assert.ok(old, `build/${name}.boc is missing: run npm run build`);
        assert.equal(old.hash, fresh.hash, `build/${name}.hash is stale: run npm run build`);
        assert.ok(old.boc.equals(fresh.boc), `build/${name}.boc is stale: run npm run build`);
        assert.equal(Cell.fromBoc(old.boc)[0].hash().toString('hex'), old.hash);
    });
}
