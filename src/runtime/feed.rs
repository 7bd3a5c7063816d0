//! Feeding the graph's clock and its queries: which epoch the input may close up to, and when
//! each probe query and live query goes in.

use dataflows::event::Query;
use dataflows::fact::Time;
use dataflows::plan::Plan;
use differential_dataflow::input::InputSession;

use crate::collect::queries::ProbeQuery;
use crate::runtime::LiveQuery;

/// Query numbers from here on are live queries; below, they index the queries file.
pub const LIVE_BASE: u64 = 1 << 62;

/// Decides when epochs close, and inserts the probe queries as the input reaches their time.
pub struct Feeder {
    tick_secs: u64,
    /// The largest lateness of any source: an epoch closes once reading is this far past it.
    max_lateness: u64,
    /// Timed queries not yet inserted, latest first.
    timed_queries: Vec<(Time, u64, ProbeQuery)>,
    /// Queries without a time, asked at the end of what was read, by number.
    untimed_queries: Vec<(u64, ProbeQuery)>,
}

impl Feeder {
    /// A feeder for `plan`'s sources, holding `queries` (those of the queries file, numbered
    /// in file order; worker 0 holds them all, the other workers none).
    pub fn new(plan: &Plan, queries: Vec<ProbeQuery>) -> Self {
        let max_lateness = plan
            .sources
            .iter()
            .map(|source| source.lateness_secs)
            .max()
            .unwrap_or(0);
        Feeder::with_queries(plan.tick_secs, max_lateness, queries)
    }

    fn with_queries(tick_secs: u64, max_lateness: u64, queries: Vec<ProbeQuery>) -> Self {
        let mut timed_queries = Vec::new();
        let mut untimed_queries = Vec::new();
        for (number, query) in queries.into_iter().enumerate() {
            match query.time {
                Some(time) => timed_queries.push((time, number as u64, query)),
                None => untimed_queries.push((number as u64, query)),
            }
        }
        timed_queries.sort_by_key(|(time, number, _)| (*time, *number));
        timed_queries.reverse();
        Feeder {
            tick_secs,
            max_lateness,
            timed_queries,
            untimed_queries,
        }
    }

    /// Forgets the timed queries asked before `cut`: a run resumed from a checkpoint at
    /// `cut` asked them before it.
    pub fn skip_queries_before(&mut self, cut: Time) {
        self.timed_queries.retain(|(time, _, _)| *time >= cut);
    }

    /// The epoch length in event-time seconds.
    pub fn tick_secs(&self) -> u64 {
        self.tick_secs
    }

    /// The start of the epoch the input may close up to, given the latest time read.
    pub fn watermark(&self, max_seen: Option<Time>) -> Time {
        let Some(max) = max_seen else { return 0 };
        let epoch = max.saturating_sub(self.max_lateness) / self.tick_secs;
        epoch.saturating_mul(self.tick_secs)
    }

    /// Inserts the timed queries asked before `time`, each at its own time or at the input's
    /// if that has passed.
    pub fn insert_queries_before(
        &mut self,
        time: Time,
        input: &mut InputSession<Time, Query, isize>,
    ) {
        while let Some((at, _, _)) = self.timed_queries.last() {
            if *at >= time {
                break;
            }
            let Some((at, number, query)) = self.timed_queries.pop() else {
                break;
            };
            let at = at.max(*input.time());
            input.update_at(
                Query {
                    number,
                    time: at,
                    row: query.row,
                    live: false,
                },
                at,
                1,
            );
        }
    }

    /// Inserts the queries without a time at `end`, the end of what was read (or at the
    /// input's time if that is later).
    pub fn insert_untimed_queries(
        &mut self,
        end: Time,
        input: &mut InputSession<Time, Query, isize>,
    ) {
        let end = end.max(*input.time());
        for (number, query) in self.untimed_queries.drain(..) {
            input.update_at(
                Query {
                    number,
                    time: end,
                    row: query.row,
                    live: false,
                },
                end,
                1,
            );
        }
    }
}

/// Asks the live queries that have arrived, at the input's current time.
pub fn ask_live_queries(
    live: &std::sync::mpsc::Receiver<LiveQuery>,
    input: &mut InputSession<Time, Query, isize>,
) {
    let mut asked = false;
    while let Ok(query) = live.try_recv() {
        let time = *input.time();
        input.update_at(
            Query {
                number: LIVE_BASE + query.id,
                time,
                row: query.row,
                live: true,
            },
            time,
            1,
        );
        asked = true;
    }
    if asked {
        input.flush();
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::rc::Rc;

    use differential_dataflow::input::Input;
    use timely::dataflow::operators::Inspect;

    use super::*;

    fn query(id: &str, time: Option<Time>) -> ProbeQuery {
        ProbeQuery {
            id: serde_json::Value::from(id),
            time,
            row: Vec::new(),
        }
    }

    #[test]
    fn the_watermark_is_the_epoch_start_the_lateness_has_passed() {
        let feeder = Feeder::with_queries(3600, 600, Vec::new());
        assert_eq!(feeder.watermark(None), 0);
        // nothing is closed before the lateness has passed the first epoch
        assert_eq!(feeder.watermark(Some(500)), 0);
        assert_eq!(feeder.watermark(Some(4100)), 0);
        assert_eq!(feeder.watermark(Some(4200)), 3600);
        assert_eq!(feeder.watermark(Some(3 * 3600 + 599)), 2 * 3600);
        // the latest time there is does not overflow
        assert_eq!(
            feeder.watermark(Some(Time::MAX)),
            (Time::MAX - 600) / 3600 * 3600
        );
    }

    /// The queries the feeder inserts, as (number, time) pairs, when the input first stands at
    /// `start`, then is fed with `feed`.
    fn inserted(
        feeder: Feeder,
        start: Time,
        feed: impl FnOnce(&mut Feeder, &mut InputSession<Time, Query, isize>) + Send + Sync + 'static,
    ) -> Vec<(u64, Time, bool)> {
        timely::execute_directly(move |worker| {
            let seen = Rc::new(RefCell::new(Vec::new()));
            let mut input = worker.dataflow::<Time, _, _>(|scope| {
                let (input, queries) = scope.new_collection::<Query, isize>();
                let seen = Rc::clone(&seen);
                queries.inner.inspect(move |(query, time, _)| {
                    assert_eq!(query.time, *time);
                    seen.borrow_mut().push((query.number, *time, query.live));
                });
                input
            });
            input.advance_to(start);
            let mut feeder = feeder;
            feed(&mut feeder, &mut input);
            drop(input);
            while worker.step() {}
            let mut seen = seen.take();
            seen.sort_unstable();
            seen
        })
    }

    #[test]
    fn timed_queries_go_in_as_the_input_reaches_them() {
        let queries = vec![
            query("late", Some(7200)),
            query("end", None),
            query("early", Some(100)),
            query("past", Some(5)),
        ];
        let feeder = Feeder::with_queries(3600, 0, queries);
        let seen = inserted(feeder, 50, |feeder, input| {
            feeder.insert_queries_before(3600, input);
            // the query asked at 5 goes in at the input's time, 50
            assert_eq!(input.time(), &50);
            input.advance_to(3600);
            // a query at the bound waits for the next epoch
            feeder.insert_queries_before(7200, input);
            input.advance_to(7200);
            feeder.insert_queries_before(Time::MAX, input);
            feeder.insert_untimed_queries(10_000, input);
        });
        assert_eq!(
            seen,
            vec![
                (0, 7200, false),
                (1, 10_000, false),
                (2, 100, false),
                (3, 50, false)
            ]
        );
    }

    #[test]
    fn untimed_queries_go_in_at_the_end_or_at_the_input_if_it_is_later() {
        let feeder = Feeder::with_queries(3600, 0, vec![query("a", None), query("b", None)]);
        let seen = inserted(feeder, 7200, |feeder, input| {
            feeder.insert_untimed_queries(3600, input);
            // they go in once
            feeder.insert_untimed_queries(3600, input);
        });
        assert_eq!(seen, vec![(0, 7200, false), (1, 7200, false)]);
    }

    #[test]
    fn live_queries_go_in_at_the_input_time_numbered_after_the_file() {
        let feeder = Feeder::with_queries(3600, 0, Vec::new());
        let seen = inserted(feeder, 3600, |_, input| {
            let (sender, receiver) = std::sync::mpsc::channel();
            for id in [7, 3] {
                sender
                    .send(LiveQuery {
                        id,
                        row: Vec::new(),
                    })
                    .expect("sent");
            }
            ask_live_queries(&receiver, input);
        });
        assert_eq!(
            seen,
            vec![(LIVE_BASE + 3, 3600, true), (LIVE_BASE + 7, 3600, true)]
        );
    }
}
