//! The Merkle tree over a batch of answers whose root a worker signs once.
//!
//! A worker that finishes several answers at once signs one root instead of one record each; every
//! receipt carries its answer's [`Inclusion`] proof, from which anyone recomputes the root the
//! signatures cover. The tree is RFC 9162's (§2.1): a leaf hashes as `SHA-256(0x00 ‖ record)`, an
//! inner node as `SHA-256(0x01 ‖ left ‖ right)`, so no inner node can pass for a leaf; a tree of
//! `n` leaves splits at the largest power of two below `n`.

use cocoon_money::Hash32;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Most answers one signed batch holds: bounds a proof to 12 hashes.
pub const MAX_BATCH: u32 = 4096;

/// Where an answer sits in its signed batch, and the hashes that lead from it to the root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inclusion {
    /// The answer's position in the batch (from 0).
    pub index: u32,
    /// How many answers the batch holds.
    pub size: u32,
    /// The sibling hashes from the leaf up to the root (RFC 9162 inclusion path).
    pub path: Vec<Hash32>,
}

/// Why an inclusion proof does not lead to a root.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("inclusion proof: {0}")]
pub struct InclusionError(&'static str);

/// The leaf hash of `data` (an answer record's signed bytes).
pub fn leaf_hash(data: &[u8]) -> [u8; 32] {
    Sha256::new()
        .chain_update([0u8])
        .chain_update(data)
        .finalize()
        .into()
}

fn node_hash(left: &[u8; 32], right: &[u8; 32]) -> [u8; 32] {
    Sha256::new()
        .chain_update([1u8])
        .chain_update(left)
        .chain_update(right)
        .finalize()
        .into()
}

/// The root over `leaves` (leaf hashes, at least one) and each leaf's inclusion proof.
///
/// # Panics
/// If `leaves` is empty or holds more than [`MAX_BATCH`] hashes: callers batch within those
/// bounds.
pub fn tree(leaves: &[[u8; 32]]) -> ([u8; 32], Vec<Inclusion>) {
    assert!(
        !leaves.is_empty() && leaves.len() <= MAX_BATCH as usize,
        "a batch holds 1 to {MAX_BATCH} answers"
    );
    let size = leaves.len() as u32;
    let mut proofs: Vec<Inclusion> = (0..size)
        .map(|index| Inclusion {
            index,
            size,
            path: Vec::new(),
        })
        .collect();
    let root = subtree(leaves, &mut proofs);
    (root, proofs)
}

/// The root of `leaves`, extending each of `proofs` (one per leaf) from this subtree up.
fn subtree(leaves: &[[u8; 32]], proofs: &mut [Inclusion]) -> [u8; 32] {
    if let [leaf] = leaves {
        return *leaf;
    }
    let split = leaves.len().next_power_of_two() / 2;
    let (left_leaves, right_leaves) = leaves.split_at(split);
    let (left_proofs, right_proofs) = proofs.split_at_mut(split);
    let left = subtree(left_leaves, left_proofs);
    let right = subtree(right_leaves, right_proofs);
    for proof in left_proofs {
        proof.path.push(Hash32(right));
    }
    for proof in right_proofs {
        proof.path.push(Hash32(left));
    }
    node_hash(&left, &right)
}

impl Inclusion {
    /// The root that `leaf` (a leaf hash) reaches along this proof (RFC 9162 §2.1.3.2): a proof
    /// whose index, size and path length do not fit together reaches none.
    pub fn root(&self, leaf: [u8; 32]) -> Result<[u8; 32], InclusionError> {
        if self.size == 0 || self.size > MAX_BATCH {
            return Err(InclusionError("the batch size is out of range"));
        }
        if self.index >= self.size {
            return Err(InclusionError("the index is outside the batch"));
        }
        let (mut index, mut last) = (self.index, self.size - 1);
        let mut hash = leaf;
        for sibling in &self.path {
            if last == 0 {
                return Err(InclusionError("the path is longer than the tree is deep"));
            }
            if index & 1 == 1 || index == last {
                hash = node_hash(&sibling.0, &hash);
                if index & 1 == 0 {
                    while index & 1 == 0 && index != 0 {
                        index >>= 1;
                        last >>= 1;
                    }
                }
            } else {
                hash = node_hash(&hash, &sibling.0);
            }
            index >>= 1;
            last >>= 1;
        }
        if last != 0 {
            return Err(InclusionError("the path is shorter than the tree is deep"));
        }
        Ok(hash)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: usize) -> Vec<[u8; 32]> {
        (0..n).map(|i| leaf_hash(&i.to_le_bytes())).collect()
    }

    /// RFC 9162's recursive definition, written out as the RFC does, to check the builder.
    fn reference_root(leaves: &[[u8; 32]]) -> [u8; 32] {
        match leaves {
            [leaf] => *leaf,
            _ => {
                let k = leaves.len().next_power_of_two() / 2;
                node_hash(&reference_root(&leaves[..k]), &reference_root(&leaves[k..]))
            }
        }
    }

    #[test]
    fn every_leaf_of_every_size_proves_into_the_root() {
        for n in (1..=70).chain([255, 256, 257, 4096]) {
            let leaves = leaves(n);
            let (root, proofs) = tree(&leaves);
            assert_eq!(root, reference_root(&leaves), "size {n}");
            for (leaf, proof) in leaves.iter().zip(&proofs) {
                assert_eq!(
                    proof.root(*leaf),
                    Ok(root),
                    "size {n}, leaf {}",
                    proof.index
                );
                assert!(proof.path.len() <= 12);
            }
        }
    }

    #[test]
    fn a_single_answer_is_its_own_root() {
        let leaf = leaf_hash(b"record");
        let (root, proofs) = tree(&[leaf]);
        assert_eq!(root, leaf);
        assert_eq!(proofs[0].path, vec![]);
        // A leaf's hash is not the hash of its bytes: no record passes for an inner node.
        assert_ne!(leaf, <[u8; 32]>::from(Sha256::digest(b"record")));
    }

    #[test]
    fn a_proof_reaches_the_root_only_for_its_own_leaf_and_place() {
        let leaves = leaves(7);
        let (root, proofs) = tree(&leaves);
        let proof = &proofs[5];
        // Another leaf, or this leaf claimed at another place or in another size of batch.
        assert_ne!(proof.root(leaves[4]), Ok(root));
        for (index, size) in [(4, 7), (6, 7), (5, 6)] {
            let moved = Inclusion {
                index,
                size,
                ..proof.clone()
            };
            assert_ne!(moved.root(leaves[5]), Ok(root), "index {index} size {size}");
        }
        // A proof is relative to its tree's size: here the same path reaches the same root in a
        // tree of 8, which is why receipts sign the size with the root.
        let resized = Inclusion {
            size: 8,
            ..proof.clone()
        };
        assert_eq!(resized.root(leaves[5]), Ok(root));
        // A changed, missing or extra sibling.
        let mut changed = proof.clone();
        changed.path[1].0[0] ^= 1;
        assert_ne!(changed.root(leaves[5]), Ok(root));
        let mut short = proof.clone();
        short.path.pop();
        assert!(short.root(leaves[5]).is_err());
        let mut long = proof.clone();
        long.path.push(Hash32(root));
        assert!(long.root(leaves[5]).is_err());
    }

    #[test]
    fn sizes_and_indexes_out_of_range_are_refused() {
        let leaf = leaf_hash(b"x");
        for (index, size) in [(0, 0), (1, 1), (0, MAX_BATCH + 1), (u32::MAX, u32::MAX)] {
            let proof = Inclusion {
                index,
                size,
                path: vec![],
            };
            assert!(proof.root(leaf).is_err(), "index {index} size {size}");
        }
    }
}
