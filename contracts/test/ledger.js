// Money on the sandbox chain, for the conservation checks: every account's balance plus every fee
// ever paid is constant, and each contract holds at least what it tracks.

import { flattenTransaction } from '@ton/test-utils';

export class Ledger {
    constructor(chain) {
        this.chain = chain;
        this.accounts = new Map();
        this.fees = 0n;
    }

    /** Counts an address's balance from now on. */
    watch(address) {
        this.accounts.set(address.toRawString(), address);
    }

    /** Records the fees of `result`'s transactions and watches every account they touched. */
    record(result) {
        for (const tx of result.transactions) {
            this.fees += tx.totalFees.coins;
            for (const out of tx.outMessages.values()) {
                // The forward fee a message carries is paid to validators when it is delivered.
                if (out.info.type === 'internal') this.fees += out.info.forwardFee;
            }
            const flat = flattenTransaction(tx);
            if (flat.to) this.watch(flat.to);
            if (flat.from) this.watch(flat.from);
        }
        return result;
    }

    async total() {
        let sum = this.fees;
        for (const address of this.accounts.values()) {
            sum += (await this.chain.getContract(address)).balance;
        }
        return sum;
    }
}
