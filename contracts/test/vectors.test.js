// The Rust side's copy of what the JS wrappers build (crates/cocoon-ton/testdata/js_vectors.json,
// compared cell for cell by cocoon-ton's unit tests) is current.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';

import { vectors } from '../vectors.js';

test('crates/cocoon-ton/testdata/js_vectors.json is what vectors.js prints now', () => {
    const kept = JSON.parse(readFileSync(new URL('../../crates/cocoon-ton/testdata/js_vectors.json', import.meta.url), 'utf8'));
    assert.deepEqual(kept, vectors(), 'run: node vectors.js > ../crates/cocoon-ton/testdata/js_vectors.json');
});
