//! A Criteo-shaped stream: deterministic click-log rows drawn from a documented logistic ground
//! truth, for measuring learning speed on wide, sparse, gappy rows.
//!
//! The [Criteo display-advertising data] has, per row, a 0/1 click label, 13 integer fields
//! (`I1`..`I13`, mostly counts) and 26 categorical fields (`C1`..`C26`, 32-bit hashes written
//! as 8 hex digits), many of them empty. This module writes rows of that shape, with two
//! columns of our own appended: an event `time`, so that pooch can cut the stream into epochs
//! and several workers can share the file, and the row's true click probability `truth_p`.
//!
//! [Criteo display-advertising data]: https://www.kaggle.com/c/criteo-display-ad-challenge
//!
//! # The ground-truth model
//!
//! Every field is missing (written empty) independently with its own probability, set near
//! the real data's missing rates ([`NUMERIC_FIELDS`], [`CATEGORICAL_FIELDS`]): about 2.7 of the
//! 13 integers and 3.3 of the 26 categoricals are missing in an average row, so a row has about
//! 33 present fields, like the anchors' Criteo-like rows (`../shared/anchors/README.md`).
//!
//! * **Integers.** Field `Ij`, when present, is `⌊exp(μ_j + σ_j ε)⌋` with `ε ~ Normal(0, 1)`:
//!   a heavy-tailed count, never negative.
//! * **Categoricals.** Field `Cc` has `K_c` levels (the real data's cardinalities, from 3 to
//!   10 million). A present value has rank `r = ⌊(K_c + 1)^u⌋ − 1` with `u ~ Uniform(0, 1)`:
//!   a log-uniform (Zipf-like) draw, so a few levels are frequent and most are rare. The level
//!   is written as the low 32 bits of `xxh3(seed, c, r)` in 8 hex digits.
//! * **Label.** With `x⁺ = ln(1 + x)`,
//!
//!   ```text
//!   logit = α + Σ_{present Ij} w_j (Ij⁺ − μ_j) + Σ_{present Cc} s_c · g(c, r_c)
//!   truth_p = 1 / (1 + exp(−logit)),   label ~ Bernoulli(truth_p)
//!   ```
//!
//!   where `g(c, r)` is a standard normal drawn from the hash of `(seed, c, r)` (so a level keeps
//!   its effect without a table of ten million entries), `w_j` and `s_c` are in the field
//!   tables (zero for pure-noise fields), and `α` is solved by bisection on a pilot sample of
//!   [`PILOT_ROWS`] rows (from its own random stream) so that the mean `truth_p` is
//!   [`POSITIVE_RATE`], Criteo's click rate of about 25%. Frequent levels' effects are learnable;
//!   rare levels' are noise that no model recovers, as in the real data.
//!
//! # The file
//!
//! `criteo.tsv`: no header (as Criteo's `train.txt`), `\n` line ends, 42 tab-separated columns:
//! `label`, `I1`..`I13`, `C1`..`C26`, `time`, `truth_p`. Row `n` (from 0) has time
//! `START_TIME + n / ROWS_PER_SEC`, so rows are in time order. It is written to a hidden
//! temporary file and renamed into place ([`crate::files::replace_with`]).
//! `pipelines/criteo.toml` reads it.
//!
//! # Reproducibility
//!
//! Every draw comes from a ChaCha8 stream seeded with the seed, and the level hashes from XXH3
//! seeded with it: the same seed and row count give the same bytes on every platform.

use std::io::{self, Write};
use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::files;
use crate::generate::sniffable::{GenerateError, START_TIME};

/// Rows per second of event time: a million rows span about 28 hours.
pub const ROWS_PER_SEC: u64 = 10;

/// The expected share of positive labels (Criteo's click rate is about 25%).
pub const POSITIVE_RATE: f64 = 0.25;

/// Rows of the pilot sample that the intercept `α` is solved on.
pub const PILOT_ROWS: usize = 20_000;

/// The name of the file written.
pub const FILE_NAME: &str = "criteo.tsv";

/// An integer field: `(missing probability, μ, σ, weight w)`.
pub const NUMERIC_FIELDS: [(f64, f64, f64, f64); 13] = [
    (0.45, 0.8, 1.2, 0.15),  // I1
    (0.00, 2.5, 1.5, -0.05), // I2
    (0.21, 2.0, 1.3, 0.00),  // I3
    (0.22, 1.6, 1.0, 0.10),  // I4
    (0.03, 7.0, 2.0, -0.08), // I5
    (0.22, 3.0, 1.8, 0.12),  // I6
    (0.04, 1.5, 1.5, 0.20),  // I7
    (0.00, 2.2, 1.0, 0.00),  // I8
    (0.04, 3.8, 1.5, 0.05),  // I9
    (0.45, 0.4, 0.7, 0.30),  // I10
    (0.04, 1.0, 1.0, 0.25),  // I11
    (0.77, 0.3, 1.0, 0.00),  // I12
    (0.22, 1.6, 1.0, 0.05),  // I13
];

/// A categorical field: `(missing probability, levels K, effect scale s)`.
pub const CATEGORICAL_FIELDS: [(f64, u64, f64); 26] = [
    (0.00, 1_460, 0.3),      // C1
    (0.00, 583, 0.4),        // C2
    (0.03, 10_000_000, 0.0), // C3
    (0.03, 2_000_000, 0.2),  // C4
    (0.00, 305, 0.3),        // C5
    (0.12, 24, 0.3),         // C6
    (0.00, 12_517, 0.2),     // C7
    (0.00, 633, 0.0),        // C8
    (0.00, 3, 0.2),          // C9
    (0.00, 93_145, 0.0),     // C10
    (0.00, 5_683, 0.3),      // C11
    (0.03, 8_000_000, 0.0),  // C12
    (0.00, 3_194, 0.2),      // C13
    (0.00, 27, 0.4),         // C14
    (0.00, 14_992, 0.0),     // C15
    (0.03, 5_000_000, 0.0),  // C16
    (0.00, 10, 0.5),         // C17
    (0.00, 5_652, 0.0),      // C18
    (0.44, 2_172, 0.2),      // C19
    (0.44, 4, 0.3),          // C20
    (0.03, 7_000_000, 0.0),  // C21
    (0.76, 18, 0.3),         // C22
    (0.00, 15, 0.4),         // C23
    (0.03, 286_181, 0.2),    // C24
    (0.44, 105, 0.3),        // C25
    (0.44, 142_572, 0.0),    // C26
];

/// What to generate.
#[derive(Clone, Debug)]
pub struct CriteoConfig {
    /// The random seed.
    pub seed: u64,
    /// How many rows.
    pub rows: u64,
}

impl Default for CriteoConfig {
    fn default() -> Self {
        CriteoConfig {
            seed: 7,
            rows: 1_000_000,
        }
    }
}

/// What was written.
#[derive(Clone, Debug, PartialEq)]
pub struct CriteoReport {
    /// Rows written.
    pub rows: u64,
    /// The share of rows labelled 1.
    pub positive_rate: f64,
    /// The share of the 39 feature fields that were empty.
    pub missing_rate: f64,
    /// The intercept `α` solved on the pilot sample.
    pub intercept: f64,
}

/// One row's draws, before the label.
struct Row {
    numeric: [Option<u64>; 13],
    /// The levels' hashes.
    categorical: [Option<u64>; 26],
    /// The logit without `α`.
    base_logit: f64,
}

/// Writes `criteo.tsv` for `config` into `out_dir` (created if missing). See the module
/// documentation for the model and the format.
pub fn generate_criteo(
    config: &CriteoConfig,
    out_dir: &Path,
) -> Result<CriteoReport, GenerateError> {
    std::fs::create_dir_all(out_dir).map_err(|source| GenerateError::CreateDir {
        path: out_dir.to_owned(),
        source,
    })?;
    let intercept = solve_intercept(config.seed);
    let mut positives = 0u64;
    let mut missing = 0u64;
    files::replace_with(out_dir, FILE_NAME, |writer| {
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        let mut line = Vec::with_capacity(512);
        for index in 0..config.rows {
            let row = draw_row(&mut rng, config.seed);
            let truth_p = sigmoid(intercept + row.base_logit);
            let label = rng.random::<f64>() < truth_p;
            positives += u64::from(label);
            line.clear();
            write_line(&mut line, &row, label, index, truth_p)?;
            missing += row.numeric.iter().filter(|value| value.is_none()).count() as u64;
            missing += row
                .categorical
                .iter()
                .filter(|value| value.is_none())
                .count() as u64;
            writer.write_all(&line)?;
        }
        Ok(())
    })?;
    let rows = config.rows.max(1) as f64;
    Ok(CriteoReport {
        rows: config.rows,
        positive_rate: positives as f64 / rows,
        missing_rate: missing as f64 / (rows * 39.0),
        intercept,
    })
}

fn draw_row(rng: &mut ChaCha8Rng, seed: u64) -> Row {
    let mut row = Row {
        numeric: [None; 13],
        categorical: [None; 26],
        base_logit: 0.0,
    };
    for (slot, &(missing, mu, sigma, weight)) in row.numeric.iter_mut().zip(&NUMERIC_FIELDS) {
        let present = rng.random::<f64>() >= missing;
        let noise: f64 = rng.sample(StandardNormal);
        if present {
            let value = (mu + sigma * noise).exp().floor() as u64;
            row.base_logit += weight * ((value as f64).ln_1p() - mu);
            *slot = Some(value);
        }
    }
    for (field, (slot, &(missing, levels, scale))) in row
        .categorical
        .iter_mut()
        .zip(&CATEGORICAL_FIELDS)
        .enumerate()
    {
        let present = rng.random::<f64>() >= missing;
        let position: f64 = rng.random();
        if present {
            // log-uniform rank in [0, levels)
            let rank = (((levels + 1) as f64).powf(position).floor() as u64)
                .saturating_sub(1)
                .min(levels - 1);
            let hash = level_hash(seed, field, rank);
            if scale != 0.0 {
                row.base_logit += scale * level_effect(seed, hash);
            }
            *slot = Some(hash);
        }
    }
    row
}

/// A level's hash, the value written for it.
fn level_hash(seed: u64, field: usize, rank: u64) -> u64 {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&(field as u64).to_le_bytes());
    key[8..].copy_from_slice(&rank.to_le_bytes());
    xxh3_64_with_seed(&key, seed)
}

/// A standard normal effect for a level, from its hash (Box–Muller on two halves of a
/// second hash, so that the effect is independent of the written digits).
fn level_effect(seed: u64, level_hash: u64) -> f64 {
    let hash = xxh3_64_with_seed(&level_hash.to_le_bytes(), seed ^ 0x5eed);
    let first = ((hash >> 32) as f64 + 0.5) / 4_294_967_296.0;
    let second = ((hash & 0xffff_ffff) as f64 + 0.5) / 4_294_967_296.0;
    (-2.0 * first.ln()).sqrt() * (std::f64::consts::TAU * second).cos()
}

fn sigmoid(logit: f64) -> f64 {
    1.0 / (1.0 + (-logit).exp())
}

/// `α` such that the pilot sample's mean `truth_p` is [`POSITIVE_RATE`].
fn solve_intercept(seed: u64) -> f64 {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(1);
    let logits: Vec<f64> = (0..PILOT_ROWS)
        .map(|_| draw_row(&mut rng, seed).base_logit)
        .collect();
    let (mut low, mut high) = (-20.0, 20.0);
    for _ in 0..60 {
        let middle = (low + high) / 2.0;
        let mean = logits
            .iter()
            .map(|logit| sigmoid(middle + logit))
            .sum::<f64>()
            / PILOT_ROWS as f64;
        if mean < POSITIVE_RATE {
            low = middle;
        } else {
            high = middle;
        }
    }
    (low + high) / 2.0
}

fn write_line(
    line: &mut Vec<u8>,
    row: &Row,
    label: bool,
    index: u64,
    truth_p: f64,
) -> io::Result<()> {
    line.push(if label { b'1' } else { b'0' });
    for value in &row.numeric {
        line.push(b'\t');
        if let Some(value) = value {
            write!(line, "{value}")?;
        }
    }
    for value in &row.categorical {
        line.push(b'\t');
        if let Some(hash) = value {
            write!(line, "{:08x}", *hash as u32)?;
        }
    }
    writeln!(
        line,
        "\t{}\t{truth_p:.6}",
        START_TIME + index / ROWS_PER_SEC
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generate(seed: u64, rows: u64) -> (CriteoReport, String) {
        let dir = tempfile::tempdir().expect("temporary directory");
        let report = generate_criteo(&CriteoConfig { seed, rows }, dir.path()).expect("generate");
        let text = std::fs::read_to_string(dir.path().join(FILE_NAME)).expect("read back");
        (report, text)
    }

    #[test]
    fn same_seed_same_bytes_other_seed_other_bytes() {
        let (first, text) = generate(3, 2_000);
        let (second, again) = generate(3, 2_000);
        let (_, other) = generate(4, 2_000);
        assert_eq!(first, second);
        assert_eq!(text, again);
        assert_ne!(text, other);
    }

    #[test]
    fn rows_have_criteo_shape_and_documented_rates() {
        let rows = 20_000;
        let (report, text) = generate(11, rows);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len() as u64, rows);
        let mut empty = 0usize;
        let mut positives = 0usize;
        let mut previous_time = 0u64;
        for line in &lines {
            let fields: Vec<&str> = line.split('\t').collect();
            assert_eq!(
                fields.len(),
                42,
                "label, 13 integers, 26 categoricals, time, truth_p"
            );
            positives += usize::from(fields[0] == "1");
            assert!(fields[0] == "0" || fields[0] == "1");
            for integer in &fields[1..14] {
                if !integer.is_empty() {
                    integer.parse::<u64>().expect("an integer field");
                }
            }
            for category in &fields[14..40] {
                assert!(category.is_empty() || category.len() == 8, "8 hex digits");
                if !category.is_empty() {
                    u32::from_str_radix(category, 16).expect("hex");
                }
            }
            empty += fields[1..40]
                .iter()
                .filter(|field| field.is_empty())
                .count();
            let time: u64 = fields[40].parse().expect("time");
            assert!(time >= previous_time, "rows in time order");
            previous_time = time;
            let truth: f64 = fields[41].parse().expect("truth_p");
            assert!((0.0..=1.0).contains(&truth));
        }
        // documented: about 6 of the 39 fields are missing in an average row
        let expected: f64 = NUMERIC_FIELDS.iter().map(|field| field.0).sum::<f64>()
            + CATEGORICAL_FIELDS.iter().map(|field| field.0).sum::<f64>();
        let per_row = empty as f64 / rows as f64;
        assert!(
            (per_row - expected).abs() < 0.1,
            "{per_row} missing per row, expected {expected}"
        );
        assert!((5.5..6.5).contains(&per_row));
        assert!((report.missing_rate * 39.0 - per_row).abs() < 1e-9);
        // about a quarter positive, as the intercept was solved for
        let rate = positives as f64 / rows as f64;
        assert!((0.23..0.27).contains(&rate), "positive rate {rate}");
        assert_eq!(report.positive_rate, rate);
        assert_eq!(previous_time, START_TIME + (rows - 1) / ROWS_PER_SEC);
    }
}
