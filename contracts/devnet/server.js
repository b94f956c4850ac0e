// A local TON devnet for tests and `cocoon dev`: @ton/sandbox behind the TON HTTP API v2.
//
//   node devnet/server.js [--listen 127.0.0.1:13100] [--root-owner ADDRESS] [--exit-with-stdin]
//
// Prints `devnet listening on http://ADDR` once it answers; with --root-owner, first deploys the
// committed root code (build/root.boc) with that owner and prints `devnet root ADDRESS` before;
// with --exit-with-stdin, exits when its standard input closes (its parent died). Methods: GET getMasterchainInfo,
// getAddressInformation, getTransactions; POST sendBoc, runGetMethod (also under /api/v2/, as
// toncenter serves them). Devnet only: POST /devnet/faucet {address, amount}, POST /devnet/advance
// {seconds}, POST /devnet/deploy-root {owner, params?}. Calls run one at a time (the sandbox is a single state machine); chain time follows the
// clock plus what /devnet/advance added.

import http from 'node:http';

import { ApiError, Devnet } from './api.js';

const MAX_BODY = 1 << 20;

const routes = {
    'GET getMasterchainInfo': (devnet) => devnet.getMasterchainInfo(),
    'GET getAddressInformation': (devnet, query) => devnet.getAddressInformation(query),
    'GET getTransactions': (devnet, query) => devnet.getTransactions(query),
    'POST sendBoc': (devnet, _query, body) => devnet.sendBoc(body),
    'POST sendBocReturnHash': (devnet, _query, body) => devnet.sendBoc(body),
    'POST runGetMethod': (devnet, _query, body) => devnet.runGetMethod(body),
    'POST devnet/faucet': (devnet, _query, body) => devnet.faucetSend(body),
    'POST devnet/advance': (devnet, _query, body) => devnet.advance(body),
    'POST devnet/deploy-root': (devnet, _query, body) => devnet.deployRoot(body),
};

function readBody(request) {
    return new Promise((resolve, reject) => {
        const chunks = [];
        let size = 0;
        request.on('data', (chunk) => {
            size += chunk.length;
            if (size > MAX_BODY) {
                reject(new ApiError(413, `body larger than ${MAX_BODY} bytes`));
                request.destroy();
                return;
            }
            chunks.push(chunk);
        });
        request.on('end', () => resolve(Buffer.concat(chunks)));
        request.on('error', reject);
    });
}

function answer(response, status, json) {
    const text = JSON.stringify(json);
    response.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
    response.end(text);
}

export async function start({ host = '127.0.0.1', port = 0 } = {}) {
    const devnet = await Devnet.create();
    let queue = Promise.resolve();
    const server = http.createServer(async (request, response) => {
        try {
            const url = new URL(request.url, 'http://devnet');
            const path = url.pathname.replace(/^\/api\/v2\//, '/').replace(/^\//, '');
            const route = routes[`${request.method} ${path}`];
            if (!route) {
                throw new ApiError(404, `no method ${request.method} ${url.pathname}`);
            }
            let body;
            if (request.method === 'POST') {
                const raw = await readBody(request);
                try {
                    body = JSON.parse(raw.toString('utf8'));
                } catch {
                    throw new ApiError(416, 'body: not JSON');
                }
            }
            const query = Object.fromEntries(url.searchParams);
            const run = queue.then(() => {
                devnet.tick();
                return route(devnet, query, body);
            });
            queue = run.catch(() => {});
            answer(response, 200, { ok: true, result: await run });
        } catch (error) {
            const code = error instanceof ApiError ? error.code : 500;
            answer(response, code >= 400 && code < 600 ? code : 500, { ok: false, error: error.message, code });
        }
    });
    await new Promise((resolve) => server.listen(port, host, resolve));
    const address = server.address();
    return { server, devnet, url: `http://${address.address}:${address.port}` };
}

if (import.meta.url === `file://${process.argv[1]}`) {
    const at = process.argv.indexOf('--listen');
    const [host, port] = (at > 0 ? process.argv[at + 1] : '127.0.0.1:13100').split(':');
    const ownerAt = process.argv.indexOf('--root-owner');
    const { url, devnet } = await start({ host, port: Number(port) });
    if (ownerAt > 0) {
        const { address } = await devnet.deployRoot({ owner: process.argv[ownerAt + 1] });
        console.log(`devnet root ${address}`);
    }
    console.log(`devnet listening on ${url}`);
    if (process.argv.includes('--exit-with-stdin')) {
        // Started by a parent that may be killed without a chance to stop us: its end of our stdin
        // closes when it dies, however it dies.
        process.stdin.on('end', () => process.exit(0));
        process.stdin.on('error', () => process.exit(0));
        process.stdin.resume();
    }
}
