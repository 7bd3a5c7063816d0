//! Facts: the immutable, typed records that enter the graph, and the values they hold.
//!
//! A fact is one parsed line of a source. Its event time travels beside it as the differential
//! timestamp; the fact itself carries the source it came from, a position-derived identity, and
//! one [`Value`] per field of the source's schema. Strings never enter the graph: they are
//! hashed to [`Symbol`]s at parse time, which is all that keys, joins and categorical features
//! need.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

/// Event time in seconds since the Unix epoch. It is the timestamp of every collection.
pub type Time = u64;

/// The hash of a string value (see [`crate::hashing::symbol`]).
pub type Symbol = u64;

/// Index of a source in the plan's source list.
pub type SourceId = u16;

/// A 64-bit float that is ordered and compared by [`f64::total_cmp`], so that it can be data.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct Real(pub f64);

impl PartialEq for Real {
    fn eq(&self, other: &Self) -> bool {
        self.0.total_cmp(&other.0) == Ordering::Equal
    }
}
impl Eq for Real {}
impl PartialOrd for Real {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Real {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}
impl std::hash::Hash for Real {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.to_bits().hash(state);
    }
}

/// One field of a fact.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Value {
    /// The field was empty or absent. Missing is a value, not an error.
    Missing,
    /// A whole number.
    Int(i64),
    /// A real number.
    Real(Real),
    /// A string, hashed.
    Text(Symbol),
    /// A list of strings, each hashed.
    List(Vec<Symbol>),
    /// A point in time, in seconds since the Unix epoch.
    Time(Time),
}

impl Value {
    /// The symbol under which this value is a key or a categorical level.
    ///
    /// Integers hash as their decimal text, so the key `196` matches whether one source types
    /// the field as an integer and another as a string. Lists and missing values have no
    /// single symbol.
    pub fn symbol(&self) -> Option<Symbol> {
        match self {
            Value::Text(symbol) => Some(*symbol),
            Value::Int(integer) => Some(crate::hashing::symbol(integer.to_string().as_bytes())),
            Value::Time(time) => Some(crate::hashing::symbol(time.to_string().as_bytes())),
            Value::Missing | Value::Real(_) | Value::List(_) => None,
        }
    }

    /// The numeric value of the field, if it has one.
    pub fn number(&self) -> Option<f64> {
        match self {
            Value::Int(integer) => Some(*integer as f64),
            Value::Real(real) => Some(real.0),
            Value::Time(time) => Some(*time as f64),
            Value::Missing | Value::Text(_) | Value::List(_) => None,
        }
    }
}

/// The values of one fact, in the order of its source's fields.
pub type Row = Vec<Value>;

/// One immutable fact from a source.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Fact {
    /// The fact's identity: where it was read (see [`position_id`], which sorts in stream
    /// order), or the hash of its key fields for a source whose facts can be retracted.
    pub id: u64,
    /// The source the fact belongs to.
    pub source: SourceId,
    /// When it happened. It is the fact's timestamp in the graph too, except for a fact
    /// admitted later than its source's lateness, which joins the open epoch.
    pub time: Time,
    /// One value per field of the source's schema.
    pub row: Row,
}

/// The identity of a fact of a retractable source: its source and the symbols of its key
/// fields. A retraction names a fact by the same key.
pub fn key_id(source: SourceId, key: &[Option<Symbol>]) -> u64 {
    let mut bytes = Vec::with_capacity(2 + 9 * key.len());
    bytes.extend_from_slice(&source.to_le_bytes());
    for symbol in key {
        match symbol {
            Some(symbol) => {
                bytes.push(1);
                bytes.extend_from_slice(&symbol.to_le_bytes());
            }
            None => bytes.push(0),
        }
    }
    crate::hashing::symbol(&bytes)
}

/// Bits of a fact id that hold the byte offset within its file.
pub const OFFSET_BITS: u32 = 40;

/// The identity of the fact that starts at `offset` in the `file`-th file of a pipeline.
///
/// Ids sort in file order and then line order, which is the stream order used to break ties
/// between facts with the same event time. Offsets up to 1 TiB and 16 million files fit.
pub fn position_id(file: u32, offset: u64) -> u64 {
    (u64::from(file) << OFFSET_BITS) | (offset & ((1 << OFFSET_BITS) - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_and_their_text_share_a_symbol() {
        let text = Value::Text(crate::hashing::symbol(b"196"));
        assert_eq!(Value::Int(196).symbol(), text.symbol());
        assert_eq!(Value::Missing.symbol(), None);
    }

    #[test]
    fn reals_order_totally() {
        let mut values = [Real(2.0), Real(f64::NAN), Real(-1.0)];
        values.sort();
        assert_eq!(values[0].0, -1.0);
        assert_eq!(values[1].0, 2.0);
        assert!(values[2].0.is_nan());
    }

    #[test]
    fn position_ids_sort_by_file_then_offset() {
        assert!(position_id(0, 1 << 30) < position_id(1, 0));
        assert!(position_id(3, 10) < position_id(3, 11));
    }
}
