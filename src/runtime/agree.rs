//! Values every worker must agree on, worked out in step: the first version number to
//! publish, and at the end of reading, the horizon.

use std::cell::RefCell;
use std::rc::Rc;

use dataflows::fact::Time;
use dataflows::learn::train::EndOfReading;
use timely::dataflow::InputHandleVec;
use timely::dataflow::operators::core::Input as _;
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::operators::{Inspect, Probe};
use timely::worker::Worker;

/// The elementwise maximum of the values the workers pass. Every worker must call it, in the
/// same order, with as many values: each call is a small dataflow they run in step.
pub fn agree(worker: &mut Worker, values: Vec<u64>) -> Vec<u64> {
    let agreed = Rc::new(RefCell::new(values.clone()));
    let mut input = InputHandleVec::<u64, Vec<u64>>::new();
    let probe = worker.dataflow::<u64, _, _>(|scope| {
        let agreed = Rc::clone(&agreed);
        scope
            .input_from(&mut input)
            .broadcast()
            .inspect(move |values: &Vec<u64>| {
                for (agreed, value) in agreed.borrow_mut().iter_mut().zip(values) {
                    *agreed = (*agreed).max(*value);
                }
            })
            .probe()
            .0
    });
    input.send(values);
    drop(input);
    while !probe.done() {
        worker.step();
    }
    agreed.take()
}

/// How reading ended over every worker, as the trainers see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AgreedEnd {
    /// Some worker was asked to stop.
    pub stopped: bool,
    /// The latest event time any worker read.
    pub max_time: Time,
    /// The end of what was read: labels due after it are not learned.
    pub horizon: Time,
}

/// Combines every worker's end of reading. Every trainer learns the horizon from every
/// worker's report in the graph; the driver learns it here too, for the queries asked at the
/// end and the summary.
pub fn agree_on_end(worker: &mut Worker, report: EndOfReading) -> AgreedEnd {
    // the maximum of `Time::MAX - read_before` is the earliest `read_before`
    let agreed = agree(
        worker,
        vec![
            u64::from(report.stopping),
            Time::MAX - report.read_before,
            report.max_time,
        ],
    );
    combine(&agreed)
}

/// The combined report from [`agree`]'s answer.
fn combine(agreed: &[u64]) -> AgreedEnd {
    let all = EndOfReading {
        stopping: agreed[0] == 1,
        read_before: Time::MAX - agreed[1],
        max_time: agreed[2],
    };
    AgreedEnd {
        stopped: all.stopping,
        max_time: all.max_time,
        horizon: dataflows::learn::train::horizon(&[all], 1).unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ends(reports: Vec<EndOfReading>) -> Vec<AgreedEnd> {
        let reports = std::sync::Arc::new(reports);
        let guards = timely::execute(timely::Config::process(reports.len()), move |worker| {
            agree_on_end(worker, reports[worker.index()])
        })
        .expect("timely starts");
        guards
            .join()
            .into_iter()
            .map(|result| result.expect("a worker"))
            .collect()
    }

    #[test]
    fn at_the_end_of_the_input_the_horizon_follows_the_latest_time_read() {
        let end = |max_time| EndOfReading {
            stopping: false,
            read_before: Time::MAX,
            max_time,
        };
        let agreed = ends(vec![end(100), end(250)]);
        let expected = AgreedEnd {
            stopped: false,
            max_time: 250,
            horizon: 251,
        };
        assert_eq!(agreed, vec![expected, expected]);
    }

    #[test]
    fn a_stop_on_one_worker_bounds_the_horizon_by_what_it_had_read() {
        let agreed = ends(vec![
            EndOfReading {
                stopping: true,
                read_before: 3600,
                max_time: 4000,
            },
            EndOfReading {
                stopping: false,
                read_before: Time::MAX,
                max_time: 9000,
            },
        ]);
        let expected = AgreedEnd {
            stopped: true,
            max_time: 9000,
            horizon: 3600,
        };
        assert_eq!(agreed, vec![expected, expected]);
    }
}
