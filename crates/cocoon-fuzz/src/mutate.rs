//! Mutations of seed inputs, in the manner of coverage-free mutation fuzzers: most mutated inputs
//! stay close to a real one, so they get past the first checks and reach the deeper ones.

use rand::seq::SliceRandom;
use rand::Rng;
use serde_json::Value;

/// Values that often sit on a decoder's boundaries (lengths, counts, signs).
const INTERESTING: &[u8] = &[
    0, 1, 0x7f, 0x80, 0xff, b'0', b'9', b'"', b'{', b'}', b'\n', b':',
];

/// Numbers that overflow, underflow or sit on a type's edge, for text formats (JSON).
const EXTREME_NUMBERS: &[&str] = &[
    "0",
    "-1",
    "4294967295",
    "4294967296",
    "9223372036854775807",
    "18446744073709551615",
    "18446744073709551616",
    "340282366920938463463374607431768211455",
    "1e308",
    "-0",
    "0.5",
];

/// Largest input a mutation grows to; decoders' own limits are far below this.
const MAX_LEN: usize = 1 << 20;

/// A new input for a decoder of JSON: half the time one of `seeds` with its JSON values changed
/// (numbers made extreme, strings emptied or grown, fields dropped or duplicated, types swapped),
/// so the input still parses and reaches the checks behind the parser; else [`mutated`].
pub fn mutated_json<R: Rng>(rng: &mut R, seeds: &[Vec<u8>]) -> Vec<u8> {
    if rng.gen() {
        if let Some(seed) = seeds.choose(rng) {
            if let Ok(mut value) = serde_json::from_slice::<Value>(seed) {
                for _ in 0..rng.gen_range(1..=3) {
                    mutate_value(rng, &mut value);
                }
                return serde_json::to_vec(&value).unwrap_or_default();
            }
        }
    }
    mutated(rng, seeds)
}

/// Changes one leaf (or one object's field list) somewhere in `value`.
fn mutate_value<R: Rng>(rng: &mut R, value: &mut Value) {
    match value {
        Value::Object(map) if !map.is_empty() && rng.gen_range(0..4) > 0 => {
            let key = map
                .keys()
                .nth(rng.gen_range(0..map.len()))
                .cloned()
                .unwrap_or_default();
            match rng.gen_range(0..8) {
                0 => {
                    map.remove(&key);
                }
                1 => {
                    map.insert(format!("{key}_extra"), Value::from(1));
                }
                _ => {
                    if let Some(child) = map.get_mut(&key) {
                        mutate_value(rng, child);
                    }
                }
            }
        }
        Value::Array(items) if !items.is_empty() && rng.gen_range(0..4) > 0 => {
            let i = rng.gen_range(0..items.len());
            match rng.gen_range(0..6) {
                0 => {
                    items.remove(i);
                }
                1 => {
                    let copy = items[i].clone();
                    items.extend(std::iter::repeat_n(copy, rng.gen_range(1..=64)));
                }
                _ => mutate_value(rng, &mut items[i]),
            }
        }
        _ => *value = replacement(rng, value),
    }
}

/// A new leaf: an extreme number, an odd string, another type.
fn replacement<R: Rng>(rng: &mut R, old: &Value) -> Value {
    match rng.gen_range(0..6) {
        0 | 1 => EXTREME_NUMBERS
            .choose(rng)
            .and_then(|n| serde_json::from_str(n).ok())
            .unwrap_or(Value::Null),
        2 => match old {
            Value::String(s) => {
                let mut bytes = s.clone().into_bytes();
                mutate_once(rng, &mut bytes, &[]);
                Value::from(String::from_utf8_lossy(&bytes).into_owned())
            }
            _ => Value::from(""),
        },
        3 => Value::from("x".repeat(rng.gen_range(0..70_000))),
        4 => [
            Value::Null,
            Value::Bool(true),
            Value::Array(vec![]),
            Value::Object(Default::default()),
        ]
        .choose(rng)
        .cloned()
        .unwrap_or(Value::Null),
        _ => Value::from(-rng.gen_range(1..1_000_i64)),
    }
}

/// A new input: one of `seeds`, changed by one mutation (half the time, so that most inputs
/// stay well-formed enough to reach deep checks) or by up to eight.
pub fn mutated<R: Rng>(rng: &mut R, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut input = seeds.choose(rng).cloned().unwrap_or_default();
    let count = if rng.gen() { 1 } else { rng.gen_range(2..=8) };
    for _ in 0..count {
        mutate_once(rng, &mut input, seeds);
    }
    input.truncate(MAX_LEN);
    input
}

fn mutate_once<R: Rng>(rng: &mut R, input: &mut Vec<u8>, seeds: &[Vec<u8>]) {
    if input.is_empty() {
        input.push(rng.gen());
        return;
    }
    let at = rng.gen_range(0..input.len());
    match rng.gen_range(0..10) {
        0 => input[at] ^= 1 << rng.gen_range(0..8),
        1 => input[at] = rng.gen(),
        2 => input[at] = *INTERESTING.choose(rng).unwrap_or(&0),
        3 => input.truncate(at),
        4 => {
            let end = rng.gen_range(at..=input.len());
            input.drain(at..end);
        }
        5 => {
            let bytes: Vec<u8> = (0..rng.gen_range(1..=16)).map(|_| rng.gen()).collect();
            input.splice(at..at, bytes);
        }
        6 => {
            // Repeat a span: long lengths, nested structures, many fields.
            let end = rng.gen_range(at..=input.len().min(at + 64));
            let span = input[at..end].to_vec();
            for _ in 0..rng.gen_range(1..=32) {
                input.splice(at..at, span.iter().copied());
            }
        }
        7 => {
            // Overwrite up to eight bytes with a big-endian or little-endian extreme number.
            let value: u64 = *[0, 1, u64::MAX, u64::MAX / 2, 1 << 31, 1 << 32, 1 << 63]
                .choose(rng)
                .unwrap_or(&0);
            let bytes = if rng.gen() {
                value.to_be_bytes()
            } else {
                value.to_le_bytes()
            };
            let width = *[1usize, 2, 4, 8].choose(rng).unwrap_or(&8);
            for (i, b) in bytes[8 - width..].iter().enumerate() {
                if let Some(slot) = input.get_mut(at + i) {
                    *slot = *b;
                }
            }
        }
        8 => {
            // Replace one of the decimal numbers, chosen uniformly, with an extreme one.
            let starts: Vec<usize> = (0..input.len())
                .filter(|&i| {
                    input[i].is_ascii_digit() && (i == 0 || !input[i - 1].is_ascii_digit())
                })
                .collect();
            if let Some(&start) = starts.choose(rng) {
                let len = input[start..]
                    .iter()
                    .take_while(|b| b.is_ascii_digit())
                    .count();
                let number = EXTREME_NUMBERS.choose(rng).unwrap_or(&"0");
                input.splice(start..start + len, number.bytes());
            }
        }
        _ => {
            // Splice: this input's head with another seed's tail.
            if let Some(other) = seeds.choose(rng) {
                if !other.is_empty() {
                    let from = rng.gen_range(0..other.len());
                    input.truncate(at);
                    input.extend_from_slice(&other[from..]);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn mutations_change_inputs_and_stay_bounded() {
        let seeds = vec![b"{\"a\":1}".to_vec(), vec![0; 100]];
        let mut rng = StdRng::seed_from_u64(1);
        let mut changed = 0;
        for _ in 0..10_000 {
            let m = mutated(&mut rng, &seeds);
            assert!(m.len() <= MAX_LEN);
            if !seeds.contains(&m) {
                changed += 1;
            }
        }
        assert!(changed > 9_000, "only {changed} of 10000 inputs were new");
    }

    #[test]
    fn the_same_seed_gives_the_same_inputs() {
        let seeds = vec![b"hello world".to_vec()];
        let a: Vec<_> = {
            let mut rng = StdRng::seed_from_u64(7);
            (0..100).map(|_| mutated(&mut rng, &seeds)).collect()
        };
        let mut rng = StdRng::seed_from_u64(7);
        let b: Vec<_> = (0..100).map(|_| mutated(&mut rng, &seeds)).collect();
        assert_eq!(a, b);
    }
}
