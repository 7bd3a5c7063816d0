//! Drift detection on a stream of losses: ADWIN (Bifet and Gavaldà, "Learning from time-changing
//! data with adaptive windowing", SDM 2007) and the Page–Hinkley test (Page 1954).
//!
//! Both are plain, deterministic state machines over `f64` observations, fed one at a time in
//! stream order. They own no clock and no randomness, so the same observations in the same order
//! give the same alarms on any layout. Their state is serde data, so a checkpoint can hold it.
//!
//! A detector answers each [`update`](DriftDetector::update) with whether a drift was detected
//! *at that observation*. ADWIN then forgets the part of its window before the change and goes
//! on; Page–Hinkley starts over from the observation after the alarm.

use serde::{Deserialize, Serialize};

/// A detector of changes in the mean of a stream of observations.
pub trait DriftDetector {
    /// Adds one observation; true if a drift is detected at it. A non-finite observation is
    /// ignored (it says nothing about the mean) and never raises an alarm.
    fn update(&mut self, observation: f64) -> bool;

    /// The number of observations the detector's current estimate rests on.
    fn window(&self) -> u64;

    /// The mean of the observations in the current window (0 when it is empty).
    fn mean(&self) -> f64;
}

/// The settings of [`Adwin`].
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdwinConfig {
    /// Confidence: a cut is made when the two sub-windows' means differ by more than a bound
    /// that holds with probability `1 - delta` under no change. Smaller is more conservative.
    pub delta: f64,
    /// Buckets of each size kept before two are merged (the paper's `M`).
    pub max_buckets: usize,
    /// Observations between two checks for a cut (checking at every one costs `O(log W)` each).
    pub clock: u64,
    /// No sub-window shorter than this is compared, and nothing is checked before the window
    /// holds twice as many.
    pub min_window: u64,
}

impl Default for AdwinConfig {
    /// The settings of MOA and River: `delta = 0.002`, `M = 5`, a check every 32 observations,
    /// sub-windows of at least 5.
    fn default() -> Self {
        AdwinConfig {
            delta: 0.002,
            max_buckets: 5,
            clock: 32,
            min_window: 5,
        }
    }
}

/// One bucket of the exponential histogram: `2^row` observations summarised by their total and
/// their sum of squared deviations from their own mean.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
struct Bucket {
    total: f64,
    variance: f64,
}

/// ADWIN2: a window of recent observations, kept as an exponential histogram in `O(M log W)`
/// space, that is cut whenever two of its sub-windows have means that differ by more than the
/// Bernstein bound allows. A cut is a detected drift.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Adwin {
    config: AdwinConfig,
    /// `rows[i]` holds buckets of `2^i` observations, oldest first.
    rows: Vec<Vec<Bucket>>,
    /// Observations in the window.
    width: u64,
    total: f64,
    /// Sum of squared deviations from the window's mean.
    variance: f64,
    /// Observations seen since the last check.
    since_check: u64,
    /// Drifts detected so far.
    detections: u64,
}

impl Adwin {
    /// An empty window with these settings.
    ///
    /// # Panics
    /// If `delta` is not in (0, 1), or `max_buckets`, `clock` or `min_window` is 0: the spec
    /// reader checks these before a graph is built.
    pub fn new(config: AdwinConfig) -> Self {
        assert!(
            config.delta > 0.0 && config.delta < 1.0,
            "ADWIN's delta must be in (0, 1), not {}",
            config.delta
        );
        assert!(config.max_buckets >= 2 && config.clock >= 1 && config.min_window >= 1);
        Adwin {
            config,
            rows: Vec::new(),
            width: 0,
            total: 0.0,
            variance: 0.0,
            since_check: 0,
            detections: 0,
        }
    }

    /// Drifts detected since the detector was made.
    pub fn detections(&self) -> u64 {
        self.detections
    }

    /// The variance of the observations in the window.
    pub fn window_variance(&self) -> f64 {
        if self.width == 0 {
            0.0
        } else {
            self.variance / self.width as f64
        }
    }

    fn insert(&mut self, observation: f64) {
        if self.width > 0 {
            let mean = self.total / self.width as f64;
            let width = self.width as f64;
            self.variance += width * (observation - mean).powi(2) / (width + 1.0);
        }
        self.width += 1;
        self.total += observation;
        if self.rows.is_empty() {
            self.rows.push(Vec::new());
        }
        self.rows[0].push(Bucket {
            total: observation,
            variance: 0.0,
        });
        self.compress();
    }

    /// Merges the two oldest buckets of every row that holds more than `M`, into the next row.
    fn compress(&mut self) {
        let mut row = 0;
        while row < self.rows.len() && self.rows[row].len() > self.config.max_buckets {
            let older = self.rows[row].remove(0);
            let newer = self.rows[row].remove(0);
            let size = (1u64 << row) as f64;
            let difference = older.total / size - newer.total / size;
            let merged = Bucket {
                total: older.total + newer.total,
                variance: older.variance
                    + newer.variance
                    + size * size * difference.powi(2) / (2.0 * size),
            };
            if row + 1 == self.rows.len() {
                self.rows.push(Vec::new());
            }
            self.rows[row + 1].push(merged);
            row += 1;
        }
    }

    /// Drops the oldest bucket, which is the first of the last non-empty row.
    fn drop_oldest(&mut self) {
        let Some(row) = self.rows.iter().rposition(|buckets| !buckets.is_empty()) else {
            return;
        };
        let bucket = self.rows[row].remove(0);
        let size = 1u64 << row;
        self.width -= size;
        self.total -= bucket.total;
        if self.width == 0 {
            self.total = 0.0;
            self.variance = 0.0;
        } else {
            let (size, rest) = (size as f64, self.width as f64);
            let difference = bucket.total / size - self.total / rest;
            let removed = bucket.variance + size * rest * difference.powi(2) / (size + rest);
            self.variance = (self.variance - removed).max(0.0);
        }
        while self.rows.last().is_some_and(Vec::is_empty) {
            self.rows.pop();
        }
    }

    /// Whether the window splits, oldest part first, into two sub-windows whose means differ by
    /// more than the bound; if so, drops the oldest bucket and says so.
    fn cut_once(&mut self) -> bool {
        let min = self.config.min_window;
        let (mut older_width, mut older_total) = (0u64, 0.0f64);
        let window_variance = self.window_variance();
        let delta_prime = (2.0 * (self.width as f64).ln() / self.config.delta).ln();
        for row in (0..self.rows.len()).rev() {
            let size = 1u64 << row;
            for bucket in &self.rows[row] {
                older_width += size;
                older_total += bucket.total;
                let newer_width = self.width - older_width;
                if newer_width < min {
                    return false;
                }
                if older_width < min {
                    continue;
                }
                let newer_total = self.total - older_total;
                let difference =
                    older_total / older_width as f64 - newer_total / newer_width as f64;
                let reciprocal =
                    1.0 / (older_width - min + 1) as f64 + 1.0 / (newer_width - min + 1) as f64;
                let epsilon = (2.0 * reciprocal * window_variance * delta_prime).sqrt()
                    + 2.0 / 3.0 * delta_prime * reciprocal;
                if difference.abs() > epsilon {
                    self.drop_oldest();
                    return true;
                }
            }
        }
        false
    }
}

impl DriftDetector for Adwin {
    fn update(&mut self, observation: f64) -> bool {
        if !observation.is_finite() {
            return false;
        }
        self.insert(observation);
        self.since_check += 1;
        if self.since_check < self.config.clock || self.width < 2 * self.config.min_window {
            return false;
        }
        self.since_check = 0;
        let mut detected = false;
        while self.width >= 2 * self.config.min_window && self.cut_once() {
            detected = true;
        }
        if detected {
            self.detections += 1;
        }
        detected
    }

    fn window(&self) -> u64 {
        self.width
    }

    fn mean(&self) -> f64 {
        if self.width == 0 {
            0.0
        } else {
            self.total / self.width as f64
        }
    }
}

/// The settings of [`PageHinkley`].
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct PageHinkleyConfig {
    /// Changes in the mean smaller than this are tolerated.
    pub delta: f64,
    /// The alarm threshold on the cumulative deviation.
    pub threshold: f64,
    /// No alarm before this many observations.
    pub min_observations: u64,
}

impl Default for PageHinkleyConfig {
    /// `threshold = 50` and at least 30 observations, as River has them, but `delta = 0.05`
    /// where River has 0.005: per-example logloss has a standard deviation of 0.3 to 0.5, and
    /// with 0.005 a stationary stream of it raises false alarms (seen at the 13,058th
    /// observation of one of the tests' streams). 0.05 still catches a rise of 0.09 in the mean
    /// within 3,000 observations (a test).
    fn default() -> Self {
        PageHinkleyConfig {
            delta: 0.05,
            threshold: 50.0,
            min_observations: 30,
        }
    }
}

/// The Page–Hinkley test for an *increase* in the mean, which for a loss stream is the drift
/// that matters: `m_T = Σ (x_t − x̄_t − δ)`, alarm when `m_T − min_t m_t > threshold`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PageHinkley {
    config: PageHinkleyConfig,
    count: u64,
    mean: f64,
    cumulative: f64,
    minimum: f64,
    detections: u64,
}

impl PageHinkley {
    /// A fresh test with these settings.
    pub fn new(config: PageHinkleyConfig) -> Self {
        PageHinkley {
            config,
            count: 0,
            mean: 0.0,
            cumulative: 0.0,
            minimum: 0.0,
            detections: 0,
        }
    }

    /// Drifts detected since the test was made.
    pub fn detections(&self) -> u64 {
        self.detections
    }
}

impl DriftDetector for PageHinkley {
    fn update(&mut self, observation: f64) -> bool {
        if !observation.is_finite() {
            return false;
        }
        self.count += 1;
        self.mean += (observation - self.mean) / self.count as f64;
        self.cumulative += observation - self.mean - self.config.delta;
        self.minimum = self.minimum.min(self.cumulative);
        if self.count >= self.config.min_observations
            && self.cumulative - self.minimum > self.config.threshold
        {
            self.detections += 1;
            let detections = self.detections;
            *self = PageHinkley::new(self.config);
            self.detections = detections;
            return true;
        }
        false
    }

    fn window(&self) -> u64 {
        self.count
    }

    fn mean(&self) -> f64 {
        self.mean
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator (SplitMix64), so the tests need no crate and give the
    /// same stream everywhere.
    struct SplitMix(u64);

    impl SplitMix {
        fn uniform(&mut self) -> f64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
        }

        /// The logloss of a prediction `p` of a Bernoulli(`rate`) outcome: a loss stream
        /// shaped like a learner's.
        fn logloss(&mut self, p: f64, rate: f64) -> f64 {
            if self.uniform() < rate {
                -p.ln()
            } else {
                -(1.0 - p).ln()
            }
        }
    }

    fn first_alarm(detector: &mut dyn DriftDetector, stream: &[f64]) -> Option<usize> {
        stream.iter().position(|&x| detector.update(x))
    }

    /// 20,000 losses of a well-calibrated model at rate 0.35, then 5,000 where the outcome
    /// rate has moved to 0.8 but the model has not.
    fn shifted_stream(seed: u64) -> (Vec<f64>, usize) {
        let mut rng = SplitMix(seed);
        let change = 20_000;
        let stream = (0..change + 5_000)
            .map(|i| {
                let rate = if i < change { 0.35 } else { 0.8 };
                rng.logloss(0.35, rate)
            })
            .collect();
        (stream, change)
    }

    #[test]
    fn adwin_raises_no_alarm_on_stationary_losses() {
        for seed in 0..5 {
            let mut rng = SplitMix(seed);
            let stream: Vec<f64> = (0..50_000).map(|_| rng.logloss(0.35, 0.35)).collect();
            let mut adwin = Adwin::new(AdwinConfig::default());
            assert_eq!(first_alarm(&mut adwin, &stream), None, "seed {seed}");
            assert_eq!(adwin.detections(), 0);
            // the window grows with the stream when nothing changes
            assert_eq!(adwin.window(), 50_000);
            let true_mean = -(0.35f64 * 0.35f64.ln() + 0.65 * 0.65f64.ln());
            assert!((adwin.mean() - true_mean).abs() < 0.01, "{}", adwin.mean());
        }
    }

    #[test]
    fn adwin_detects_a_shift_soon_and_forgets_what_came_before() {
        for seed in 0..5 {
            let (stream, change) = shifted_stream(seed);
            let mut adwin = Adwin::new(AdwinConfig::default());
            let alarm = first_alarm(&mut adwin, &stream).expect("a drift is detected");
            assert!(alarm >= change, "seed {seed}: a false alarm at {alarm}");
            assert!(
                alarm < change + 500,
                "seed {seed}: detected {} late",
                alarm - change
            );
            // after the stream, the window holds (mostly) the post-change part
            for &x in &stream[alarm + 1..] {
                adwin.update(x);
            }
            assert!(adwin.window() <= 5_000 + 500, "window {}", adwin.window());
        }
    }

    #[test]
    fn adwin_window_statistics_match_a_direct_computation() {
        let mut rng = SplitMix(9);
        let stream: Vec<f64> = (0..3_001).map(|_| rng.uniform() * 4.0).collect();
        let mut adwin = Adwin::new(AdwinConfig::default());
        for &x in &stream {
            adwin.update(x);
        }
        let n = adwin.window() as usize;
        assert_eq!(n, stream.len());
        let mean = stream.iter().sum::<f64>() / n as f64;
        let variance = stream.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        assert!((adwin.mean() - mean).abs() < 1e-9);
        assert!((adwin.window_variance() - variance).abs() < 1e-9);
        // the histogram is O(M log W): at most M + 1 buckets in each of about log2(W) rows
        assert!(adwin.rows.len() <= 12, "{} rows", adwin.rows.len());
        assert!(adwin.rows.iter().all(|row| row.len() <= 5));
        let held: u64 = adwin
            .rows
            .iter()
            .enumerate()
            .map(|(row, buckets)| (1u64 << row) * buckets.len() as u64)
            .sum();
        assert_eq!(held, adwin.window());
    }

    #[test]
    fn page_hinkley_detects_an_increase_and_not_a_stationary_stream() {
        for seed in 0..5 {
            let mut rng = SplitMix(100 + seed);
            let stream: Vec<f64> = (0..50_000).map(|_| rng.logloss(0.35, 0.35)).collect();
            let mut test = PageHinkley::new(PageHinkleyConfig::default());
            assert_eq!(first_alarm(&mut test, &stream), None, "seed {seed}");

            let (stream, change) = shifted_stream(seed);
            let mut test = PageHinkley::new(PageHinkleyConfig::default());
            let alarm = first_alarm(&mut test, &stream).expect("a drift is detected");
            assert!(alarm >= change, "seed {seed}: a false alarm at {alarm}");
            assert!(
                alarm < change + 500,
                "seed {seed}: detected {} late",
                alarm - change
            );
        }
    }

    #[test]
    fn a_small_rise_in_the_loss_is_detected_too() {
        // the outcome rate moves from 0.35 to 0.5 under a model that still says 0.35: the mean
        // logloss rises by about 0.09
        for seed in 0..5 {
            let mut rng = SplitMix(200 + seed);
            let change = 20_000;
            let stream: Vec<f64> = (0..change + 10_000)
                .map(|i| rng.logloss(0.35, if i < change { 0.35 } else { 0.5 }))
                .collect();
            let detectors: [Box<dyn DriftDetector>; 2] = [
                Box::new(Adwin::new(AdwinConfig::default())),
                Box::new(PageHinkley::new(PageHinkleyConfig::default())),
            ];
            for (name, mut detector) in ["adwin", "page-hinkley"].into_iter().zip(detectors) {
                let alarm = first_alarm(detector.as_mut(), &stream).expect("detected");
                assert!(
                    alarm >= change,
                    "{name}, seed {seed}: a false alarm at {alarm}"
                );
                assert!(
                    alarm < change + 3_000,
                    "{name}, seed {seed}: detected {} late",
                    alarm - change
                );
            }
        }
    }

    #[test]
    fn non_finite_observations_are_ignored() {
        let mut adwin = Adwin::new(AdwinConfig::default());
        let mut test = PageHinkley::new(PageHinkleyConfig::default());
        for x in [f64::NAN, f64::INFINITY, 0.5, f64::NEG_INFINITY] {
            assert!(!adwin.update(x));
            assert!(!test.update(x));
        }
        assert_eq!((adwin.window(), test.window()), (1, 1));
        assert_eq!((adwin.mean(), test.mean()), (0.5, 0.5));
    }

    #[test]
    fn the_same_stream_gives_the_same_state() {
        let (stream, _) = shifted_stream(3);
        let run = || {
            let mut adwin = Adwin::new(AdwinConfig::default());
            let alarms: Vec<usize> = (0..stream.len())
                .filter(|&i| adwin.update(stream[i]))
                .collect();
            (alarms, adwin)
        };
        assert_eq!(run(), run());
    }
}
