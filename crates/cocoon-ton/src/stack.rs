//! A get-method's stack as the TON HTTP API v2 gives it (`["num", "0x…"]`, `["cell", {"bytes":
//! base64}]`, `["slice", …]`, `["null", null]`, `["tuple", {"elements": […]}]`), decoded into typed
//! entries. The answer is hostile: numbers past 257 bits, nesting past [`MAX_DEPTH`], more than
//! [`MAX_ENTRIES`] entries, and cells that are not one-root bags of cells are errors.

use base64::Engine as _;
use num_bigint::BigInt;
use serde_json::Value;
use tonlib_core::cell::{ArcCell, BagOfCells};
use tonlib_core::TonAddress;

/// The most entries one stack (or tuple) may hold.
pub const MAX_ENTRIES: usize = 255;
/// The deepest tuple nesting read.
pub const MAX_DEPTH: usize = 4;

/// One stack entry.
#[derive(Debug, Clone, PartialEq)]
pub enum StackEntry {
    /// An integer (TVM integers are 257-bit).
    Int(BigInt),
    /// A cell.
    Cell(ArcCell),
    /// A slice (as its cell).
    Slice(ArcCell),
    /// `null`.
    Null,
    /// A tuple.
    Tuple(Vec<StackEntry>),
}

/// Why a stack could not be read as what the get-method returns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("stack entry {index}: {reason}")]
pub struct StackError {
    /// Which entry.
    pub index: usize,
    /// What was wrong.
    pub reason: String,
}

fn error(index: usize, reason: impl ToString) -> StackError {
    StackError {
        index,
        reason: reason.to_string(),
    }
}

fn parse_number(text: &str) -> Option<BigInt> {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let value = match digits.strip_prefix("0x") {
        // 257 bits: at most 65 hex or 78 decimal digits.
        Some(hex) if !hex.is_empty() && hex.len() <= 65 => BigInt::parse_bytes(hex.as_bytes(), 16),
        None if !digits.is_empty() && digits.len() <= 78 => {
            BigInt::parse_bytes(digits.as_bytes(), 10)
        }
        _ => None,
    }?;
    Some(if negative { -value } else { value })
}

fn parse_cell(value: &Value) -> Option<ArcCell> {
    let text = match value {
        Value::String(text) => text.as_str(),
        Value::Object(object) => object.get("bytes")?.as_str()?,
        _ => return None,
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .ok()?;
    BagOfCells::parse(&bytes).ok()?.single_root().ok()
}

/// toncenter's typed form of a tuple element (`{"@type": "tvm.stackEntryNumber", …}`).
fn parse_typed(value: &Value, index: usize, depth: usize) -> Result<StackEntry, StackError> {
    let kind = value.get("@type").and_then(Value::as_str).unwrap_or("");
    match kind {
        "tvm.stackEntryNumber" => value
            .pointer("/number/number")
            .and_then(Value::as_str)
            .and_then(parse_number)
            .map(StackEntry::Int)
            .ok_or_else(|| error(index, "not a number")),
        "tvm.stackEntryCell" => value
            .pointer("/cell/bytes")
            .and_then(|bytes| parse_cell(&Value::from(bytes.as_str()?)))
            .map(StackEntry::Cell)
            .ok_or_else(|| error(index, "not a cell")),
        "tvm.stackEntrySlice" => value
            .pointer("/slice/bytes")
            .and_then(|bytes| parse_cell(&Value::from(bytes.as_str()?)))
            .map(StackEntry::Slice)
            .ok_or_else(|| error(index, "not a slice")),
        "tvm.stackEntryTuple" => parse_list(
            value
                .pointer("/tuple/elements")
                .ok_or_else(|| error(index, "tuple without elements"))?,
            depth + 1,
        )
        .map(StackEntry::Tuple),
        _ => Err(error(index, format!("unknown entry type {kind:.40}"))),
    }
}

fn parse_entry(value: &Value, index: usize, depth: usize) -> Result<StackEntry, StackError> {
    if value.is_object() {
        return parse_typed(value, index, depth);
    }
    let pair = value
        .as_array()
        .filter(|pair| pair.len() == 2)
        .ok_or_else(|| error(index, "not a [type, value] pair"))?;
    let kind = pair[0].as_str().unwrap_or("");
    let value = &pair[1];
    match kind {
        "num" | "int" => value
            .as_str()
            .and_then(parse_number)
            .map(StackEntry::Int)
            .ok_or_else(|| error(index, "not a number of at most 257 bits")),
        "cell" => parse_cell(value)
            .map(StackEntry::Cell)
            .ok_or_else(|| error(index, "not a bag of one cell")),
        "slice" => parse_cell(value)
            .map(StackEntry::Slice)
            .ok_or_else(|| error(index, "not a bag of one cell")),
        "null" => Ok(StackEntry::Null),
        "tuple" | "list" => parse_list(
            value
                .get("elements")
                .ok_or_else(|| error(index, "tuple without elements"))?,
            depth + 1,
        )
        .map(StackEntry::Tuple),
        _ => Err(error(index, format!("unknown entry type {kind:.40}"))),
    }
}

fn parse_list(values: &Value, depth: usize) -> Result<Vec<StackEntry>, StackError> {
    if depth > MAX_DEPTH {
        return Err(error(0, format!("tuples nested deeper than {MAX_DEPTH}")));
    }
    let values = values
        .as_array()
        .ok_or_else(|| error(0, "not a list of entries"))?;
    if values.len() > MAX_ENTRIES {
        return Err(error(0, format!("more than {MAX_ENTRIES} entries")));
    }
    values
        .iter()
        .enumerate()
        .map(|(index, value)| parse_entry(value, index, depth))
        .collect()
}

/// Reads a get-method's stack, in order.
#[derive(Debug)]
pub struct StackReader {
    entries: std::vec::IntoIter<StackEntry>,
    next: usize,
}

impl StackReader {
    /// A reader of `values` (the API's `stack`).
    pub fn new(values: &[Value]) -> Result<Self, StackError> {
        Ok(Self::of(parse_list(&Value::from(values.to_vec()), 0)?))
    }

    /// A reader of entries already decoded (a tuple's).
    pub fn of(entries: Vec<StackEntry>) -> Self {
        Self {
            entries: entries.into_iter(),
            next: 0,
        }
    }

    fn take(&mut self) -> Result<StackEntry, StackError> {
        let index = self.next;
        self.next += 1;
        self.entries
            .next()
            .ok_or_else(|| error(index, "missing (the stack is too short)"))
    }

    fn int(&mut self) -> Result<(usize, BigInt), StackError> {
        let index = self.next;
        match self.take()? {
            StackEntry::Int(value) => Ok((index, value)),
            other => Err(error(index, format!("expected a number, got {other:.40?}"))),
        }
    }

    /// The next entry as an unsigned number that fits `T` (u8 … u64).
    pub fn uint<T: TryFrom<BigInt>>(&mut self) -> Result<T, StackError> {
        let (index, value) = self.int()?;
        T::try_from(value).map_err(|_| error(index, "out of range"))
    }

    /// The next entry as a 256-bit unsigned number (a key, a hash, an account id).
    pub fn uint256(&mut self) -> Result<[u8; 32], StackError> {
        let (index, value) = self.int()?;
        let (sign, bytes) = value.to_bytes_be();
        let start = 32usize.checked_sub(bytes.len());
        match (sign, start) {
            (num_bigint::Sign::Minus, _) | (_, None) => Err(error(index, "not a 256-bit unsigned")),
            (_, Some(start)) => {
                let mut out = [0; 32];
                out[start..].copy_from_slice(&bytes);
                Ok(out)
            }
        }
    }

    /// The next entry as a boolean (TVM: -1 true, 0 false).
    pub fn bool(&mut self) -> Result<bool, StackError> {
        let (index, value) = self.int()?;
        match i8::try_from(value) {
            Ok(0) => Ok(false),
            Ok(-1) => Ok(true),
            _ => Err(error(index, "not a boolean (0 or -1)")),
        }
    }

    /// The next entry as an address (a slice holding `MsgAddressInt`).
    pub fn address(&mut self) -> Result<TonAddress, StackError> {
        let index = self.next;
        match self.take()? {
            StackEntry::Slice(cell) | StackEntry::Cell(cell) => cell
                .parser()
                .load_address()
                .map_err(|e| error(index, format!("not an address: {e}"))),
            other => Err(error(
                index,
                format!("expected an address, got {other:.40?}"),
            )),
        }
    }

    /// The next entry as a cell or `null`.
    pub fn maybe_cell(&mut self) -> Result<Option<ArcCell>, StackError> {
        let index = self.next;
        match self.take()? {
            StackEntry::Cell(cell) => Ok(Some(cell)),
            StackEntry::Null => Ok(None),
            other => Err(error(
                index,
                format!("expected a cell or null, got {other:.40?}"),
            )),
        }
    }

    /// The next entry as a tuple of at most `max` entries.
    pub fn tuple(&mut self, max: usize) -> Result<StackReader, StackError> {
        let index = self.next;
        match self.take()? {
            StackEntry::Tuple(entries) if entries.len() <= max => Ok(StackReader::of(entries)),
            StackEntry::Tuple(_) => Err(error(index, format!("more than {max} entries"))),
            // An empty TVM tuple can come back as null from some providers.
            StackEntry::Null => Ok(StackReader::of(Vec::new())),
            other => Err(error(index, format!("expected a tuple, got {other:.40?}"))),
        }
    }

    /// How many entries are left.
    pub fn remaining(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn numbers_in_every_spelling_and_their_limits() {
        let stack = [
            json!(["num", "0x10"]),
            json!(["num", "-0x1"]),
            json!(["int", "255"]),
            json!({"@type": "tvm.stackEntryNumber", "number": {"number": "7"}}),
        ];
        let mut reader = StackReader::new(&stack).unwrap();
        assert_eq!(reader.uint::<u64>().unwrap(), 16);
        assert!(reader.bool().unwrap());
        assert_eq!(reader.uint::<u8>().unwrap(), 255);
        assert_eq!(reader.uint::<u32>().unwrap(), 7);
        assert!(reader.uint::<u32>().is_err(), "past the end");

        let too_wide = [json!(["num", format!("0x{}", "f".repeat(66))])];
        assert!(StackReader::new(&too_wide).is_err());
        let negative = [json!(["num", "-0x5"])];
        assert!(StackReader::new(&negative).unwrap().uint::<u64>().is_err());
        assert!(StackReader::new(&negative).unwrap().uint256().is_err());
        let big = [json!(["num", format!("0x1{}", "0".repeat(64))])];
        assert!(StackReader::new(&big).unwrap().uint256().is_err(), "2^256");
    }

    #[test]
    fn hostile_shapes_are_errors_not_panics() {
        let mut deep = json!(["num", "0x1"]);
        for _ in 0..=MAX_DEPTH {
            deep = json!(["tuple", {"elements": [deep]}]);
        }
        for stack in [
            vec![json!("num")],
            vec![json!(["num"])],
            vec![json!(["cell", {"bytes": "not base64!"}])],
            vec![json!(["cell", {"bytes": ""}])],
            vec![json!(["slice", 5])],
            vec![json!(["weird", 1])],
            vec![json!({"@type": "tvm.stackEntryTuple"})],
            vec![deep],
            vec![json!(["num", "0x1"]); MAX_ENTRIES + 1],
        ] {
            assert!(StackReader::new(&stack).is_err(), "{stack:?}");
        }
        let mut reader = StackReader::new(&[json!(["null", null]), json!(["num", "0x2"])]).unwrap();
        assert!(reader.address().is_err());
        assert!(reader.bool().is_err(), "2 is not a boolean");
    }
}
