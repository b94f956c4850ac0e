// Compiles contracts/src/<name>.tolk with @ton/tolk-js into build/<name>.boc and build/<name>.hash
// (hex code hash). `node build.js --check` compiles and fails if the committed files differ.
import { readFileSync, writeFileSync, mkdirSync, existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { runTolkCompiler } from '@ton/tolk-js';

export const CONTRACTS = ['client_channel', 'proxy', 'root'];
const here = dirname(fileURLToPath(import.meta.url));

export async function compile(name) {
    const result = await runTolkCompiler({
        entrypointFileName: `${name}.tolk`,
        fsReadCallback: (path) => readFileSync(join(here, 'src', path), 'utf-8'),
    });
    if (result.status !== 'ok') throw new Error(`${name}.tolk: ${result.message}`);
    return { boc: Buffer.from(result.codeBoc64, 'base64'), hash: result.codeHashHex.toLowerCase() };
}

export function committed(name) {
    const boc = join(here, 'build', `${name}.boc`);
    if (!existsSync(boc)) return null;
    return { boc: readFileSync(boc), hash: readFileSync(join(here, 'build', `${name}.hash`), 'utf-8').trim() };
}

async function main() {
    const check = process.argv.includes('--check');
    mkdirSync(join(here, 'build'), { recursive: true });
    let stale = 0;
    for (const name of CONTRACTS) {
        const { boc, hash } = await compile(name);
        if (check) {
            const old = committed(name);
            if (!old || old.hash !== hash || !old.boc.equals(boc)) {
                console.error(`${name}: sources no longer compile to the committed build/${name}.boc (run npm run build)`);
                stale += 1;
            }
        } else {
            writeFileSync(join(here, 'build', `${name}.boc`), boc);
            writeFileSync(join(here, 'build', `${name}.hash`), `${hash}\n`);
            console.log(`${name}: ${hash} (${boc.length} bytes)`);
        }
    }
    if (stale) process.exit(1);
}

if (process.argv[1] === fileURLToPath(import.meta.url)) await main();
