//! The lookup fill: how an event's aggregate slots are filled from a feature store, the same
//! in the graph's as-of lookups and in serving outside the graph.

use crate::event::Event;
use crate::fact::{Symbol, Value};
use crate::fixed::Accum;
use crate::plan::{GLOBAL_KEY, LookupGroup};

/// The store key under which a row reads a group's aggregates: the symbol of the group's
/// example field, or [`GLOBAL_KEY`] for the global group; `None` when the field is missing
/// (or holds no single symbol), and the group reads nothing.
pub fn group_key(group: &LookupGroup, row: &[Value]) -> Option<Symbol> {
    match group.example_field {
        Some(field) => row.get(field).and_then(Value::symbol),
        None => Some(GLOBAL_KEY),
    }
}

/// Fills the aggregate slots of `groups` in an event: each aggregate of a group is what `read`
/// gives for the group's key and the aggregate's index.
///
/// A group without a key leaves its slots as they are (zero for a fresh event): an entity the
/// event does not name has no history, as a new one has none.
pub fn fill_aggregates(
    groups: &[LookupGroup],
    event: &mut Event,
    mut read: impl FnMut(Symbol, usize) -> Accum,
) {
    for group in groups {
        let Some(key) = group_key(group, &event.row) else {
            continue;
        };
        for &aggregate in &group.aggregates {
            if let Some(slot) = event.aggregates.get_mut(aggregate) {
                *slot = read(key, aggregate);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hashing::symbol;

    fn event(row: Vec<Value>) -> Event {
        Event {
            id: 1,
            time: 10,
            as_of: 10,
            row,
            aggregates: vec![(0, 0); 3],
            label: None,
            live: false,
        }
    }

    #[test]
    fn each_group_reads_under_its_own_key() {
        let groups = [
            LookupGroup {
                example_field: Some(0),
                aggregates: vec![0, 2],
            },
            LookupGroup {
                example_field: None,
                aggregates: vec![1],
            },
        ];
        let dog = symbol(b"dog-7");
        let mut filled = event(vec![Value::Text(dog)]);
        let mut asked = Vec::new();
        fill_aggregates(&groups, &mut filled, |key, aggregate| {
            asked.push((key, aggregate));
            (aggregate as i64 + 1, 10)
        });
        assert_eq!(asked, vec![(dog, 0), (dog, 2), (GLOBAL_KEY, 1)]);
        assert_eq!(filled.aggregates, vec![(1, 10), (2, 10), (3, 10)]);
    }

    #[test]
    fn a_missing_key_reads_nothing() {
        let groups = [LookupGroup {
            example_field: Some(0),
            aggregates: vec![0],
        }];
        for row in [vec![Value::Missing], vec![], vec![Value::List(vec![1, 2])]] {
            let mut filled = event(row);
            fill_aggregates(&groups, &mut filled, |_, _| (5, 5));
            assert_eq!(filled.aggregates, vec![(0, 0); 3]);
        }
    }
}
