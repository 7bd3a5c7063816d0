//! The Sniffable generator: deterministic fact files drawn from a documented ground-truth model.
//!
//! Sniffable is a social network for dogs. Dogs follow dogs, post with hashtags, and like each
//! other's posts. The Pooch Predictor learns whether a post will be *popular*: liked at least
//! [`LABEL_AT_LEAST`] times within [`LABEL_WITHIN_SECS`] of being posted. This module writes
//! such a world from a seed, together with the exact model it was drawn from, so that a learned
//! model can be checked against the probabilities that really produced the labels, not only
//! against the noisy labels themselves.
//!
//! # The ground-truth model
//!
//! Time runs for `days` days from [`START_TIME`], which is midnight UTC, so the hour of day of a
//! time `t` is `(t - START_TIME) % 86400 / 3600`. All times are whole Unix seconds.
//!
//! * **Dogs.** Dog `d` has a latent popularity `z_d ~ Normal(0, 0.9)` and an activity
//!   `a_d = min(exp(-0.405 + 0.9 ε), 8)` posts per day with `ε ~ Normal(0, 1)`: a lognormal
//!   with mean 1 before the cap, so most dogs post about daily and a few post many times a day.
//! * **Follows.** Each dog follows between 10 and 40 others (uniformly many), drawn without
//!   replacement with probability proportional to `exp(z_followee)`: popular dogs attract
//!   followers. 70% of follows exist at `START_TIME` (their time is `START_TIME`); the rest
//!   arrive at a uniformly drawn second of the `days`. `followers_d(t)` counts the follows of
//!   `d` whose time is strictly before `t`.
//! * **Posts.** Dog `d` posts as a Poisson process of `a_d · w(h)` posts per day, where
//!   `w(h) = 1 + 0.6 cos(2π (h − 19) / 24)` averages 1 over the day and peaks at 19:00: dogs
//!   post in the evening. A post carries 0, 1, 2, 3 or 4 hashtags with probabilities 0.20,
//!   0.30, 0.25, 0.15 and 0.10, drawn without repetition from a vocabulary of 150 tags whose
//!   usage is Zipf-like (the tag of rank `k`, from 0, is drawn with weight `1 / (k + 1)`). Tag
//!   `h` has an effect `β_h = b_h − Σ_k u_k b_k`, with `b_h ~ Normal(0, 0.45)` and `u_k` the
//!   usage share of tag `k`: centering on the average drawn tag keeps the few most used tags from
//!   shifting the positive rate from one seed to the next. The first 50 tags are dog words
//!   (`ball`, `park`, ...), the rest are `tag50` to `tag149`.
//! * **Likes in the label window.** A post by `d` at time `t` in hour `h` gets
//!   `N ~ Poisson(λ)` likes within [`LABEL_WITHIN_SECS`], where
//!
//!   ```text
//!   ln λ = α + z_d + Σ_tags β_h + γ_h + δ · ln(1 + followers_d(t))
//!   α = 0.1,   δ = 0.3,   γ_h = 0.3 cos(2π (h − 20) / 24)
//!   ```
//!
//!   so evening posts do a little better. Each like comes `1 + ⌊X⌋` seconds after the post,
//!   with `X` exponential of mean 3 hours truncated to `[0, LABEL_WITHIN_SECS − 1)`: likes
//!   arrive soon after a post, and always strictly after it and strictly inside the window.
//! * **Later likes.** A further `M ~ Poisson(0.3 λ)` likes arrive `LABEL_WITHIN_SECS + ⌊Y⌋`
//!   seconds after the post, with `Y` exponential of mean 1 day truncated to the six days that
//!   follow the window. They never count for the label, but they feed features such as "likes
//!   received in the last 7 days".
//! * **Likers.** Each like is, with probability 0.8, by a uniformly chosen follower of `d` (as of
//!   the post time), and otherwise by a uniformly chosen dog other than `d`. A dog likes a post
//!   at most once, unless the post has more likes than there are other dogs.
//! * **Label.** A post is popular if and only if `N ≥ LABEL_AT_LEAST`, and its `truth_p` is
//!   `P(Poisson(λ) ≥ LABEL_AT_LEAST)`. The realised label can be read back from `likes.csv`
//!   alone: count the post's likes with time `< post time + LABEL_WITHIN_SECS`.
//!
//! Posts made near the end still get all their likes, so like times run up to seven days past
//! the last day, and every label in the data is complete.
//!
//! With the defaults (5000 dogs, 28 days) this gives about 125 thousand follows, 140 thousand
//! posts and 1.1 million likes, a mean `λ` of about 6.5, a positive rate of about 35%, and a
//! truth AUC (of `truth_p` against the realised labels) of about 0.96: most of the uncertainty
//! about a post is in its dog, its tags and its hour, which a model can learn, and the rest is
//! Poisson noise, which no model can.
//!
//! # Files
//!
//! All CSV files have a header line, `\n` line ends, and rows sorted by `time`, ties in the order
//! they were generated. Dogs are `dog-<i>` (from 0), posts are `p-<n>` numbered in time order.
//!
//! * `follows.csv`: `follower,followee,time`.
//! * `posts.csv`: `post,dog,hashtags,time,truth_p`, hashtags joined by `|`.
//! * `likes.csv`: `post,dog,time`, where `dog` is the liker.
//! * `queries.jsonl`: eight probe queries, at the first whole hour after the last fact.
//! * `truth.json`: every parameter above, each dog's popularity and activity, the label, the
//!   config, and the true probability of each query.
//!
//! Each file is written to a hidden temporary file and renamed into place
//! ([`crate::files::replace_with`]), so a crash never leaves a half file under its final name.
//!
//! # Reproducibility
//!
//! Every draw comes from a [`ChaCha8Rng`] seeded with the config's seed, one stream per phase
//! (dogs, vocabulary, follows, posts, likes), so that changing how one phase draws does not
//! reshuffle the others. ChaCha8 gives the same stream on every platform, so a config writes the
//! same bytes everywhere, unless a platform's `exp`, `ln` or `cos` rounds differently in the last
//! bit, which could change a rare sixth decimal of `truth_p` or a rare Poisson draw.

use std::collections::BTreeMap;
use std::f64::consts::TAU;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Poisson, StandardNormal};
use serde::Serialize;

use crate::files::{self, FileError};

/// First second of generated time: 2026-01-01T00:00:00Z.
pub const START_TIME: u64 = 1_767_225_600;

/// The label window: a post is popular if it gets at least [`LABEL_AT_LEAST`] likes within this
/// many seconds of being posted (strictly before `post time + LABEL_WITHIN_SECS`).
pub const LABEL_WITHIN_SECS: u64 = 24 * 3600;

/// The label threshold: a post is popular if it gets at least this many likes within
/// [`LABEL_WITHIN_SECS`]. The like rate `λ` is skewed (mean about 6.5, median about 3), and 5
/// likes puts the positive rate near 35%.
pub const LABEL_AT_LEAST: u32 = 5;

const SECS_PER_HOUR: u64 = 3600;
const SECS_PER_DAY: u64 = 24 * SECS_PER_HOUR;

/// Standard deviation of a dog's latent popularity `z_d`.
const POPULARITY_SD: f64 = 0.9;
/// Standard deviation of the log of a dog's activity; the log mean is chosen so the mean is 1.
const ACTIVITY_LOG_SD: f64 = 0.9;
/// No dog posts more than this many times a day on average.
const ACTIVITY_CAP_PER_DAY: f64 = 8.0;

/// Fewest dogs a dog follows (fewer only when the network is smaller).
const FOLLOWS_PER_DOG_MIN: usize = 10;
/// Most dogs a dog follows.
const FOLLOWS_PER_DOG_MAX: usize = 40;
/// Share of follows that already exist at [`START_TIME`].
const INITIAL_FOLLOW_SHARE: f64 = 0.7;

/// Hour of day at which dogs post most.
const POSTING_PEAK_HOUR: f64 = 19.0;
/// Relative amplitude of the daily posting cycle: 0.6 posts 4 times as often at the peak as at
/// the trough.
const POSTING_HOUR_AMPLITUDE: f64 = 0.6;

/// Probability that a post has 0, 1, 2, 3 or 4 hashtags.
const HASHTAG_COUNT_PROBABILITIES: [f64; 5] = [0.20, 0.30, 0.25, 0.15, 0.10];
/// Number of distinct hashtags ever used.
const VOCABULARY_SIZE: usize = 150;
/// Tag of rank `k` (from 0) is used with weight `1 / (k + 1)^HASHTAG_ZIPF_EXPONENT`.
const HASHTAG_ZIPF_EXPONENT: f64 = 1.0;
/// Standard deviation of a hashtag's effect `β_h` on the log like rate.
const HASHTAG_EFFECT_SD: f64 = 0.45;
/// Readable names for the most used tags, by rank; the rest are `tag<k>`, `k` being the rank.
const HASHTAG_WORDS: &str = "\
    ball park walk treat zoomies nap fetch puppy beach snow stick bath squirrel cuddles bone \
    frisbee hike swim rescue goodboy goodgirl sploot blep boop woof toy couch sunbeam \
    birthday costume grooming agility training dinner breakfast mud rain leash sniff tail \
    paws belly howl bark chew pond forest car window blanket";

/// `α`: the log like rate of an average dog with no followers, tags or time-of-day effect.
const INTERCEPT: f64 = 0.1;
/// `δ`: how much the log like rate grows with `ln(1 + followers)`.
const FOLLOWER_COEFFICIENT: f64 = 0.3;
/// Hour of day at which a post gets the most likes.
const LIKE_PEAK_HOUR: f64 = 20.0;
/// Amplitude of the hour effect `γ_h` on the log like rate.
const HOUR_EFFECT_AMPLITUDE: f64 = 0.3;

/// Mean delay of a like in the label window, before truncation to the window.
const LIKE_DECAY_SECS: f64 = 3.0 * 3600.0;
/// `ρ`: expected later likes per expected like in the window.
const LATER_LIKE_RATIO: f64 = 0.3;
/// Later likes arrive before this many seconds after the post.
const LATER_LIKES_UNTIL_SECS: u64 = 7 * SECS_PER_DAY;
/// Mean delay of a later like after the end of the window, before truncation.
const LATER_LIKE_DECAY_SECS: f64 = SECS_PER_DAY as f64;
/// Share of likes that come from the author's followers.
const FOLLOWER_LIKER_SHARE: f64 = 0.8;
/// Random draws of a liker before falling back to a scan for a dog that has not liked the post.
const LIKER_ATTEMPTS: usize = 32;

/// The dog named in the query about a dog the data has never seen.
const UNKNOWN_DOG: &str = "dog-unknown";
/// The hashtag named in the query about a tag the data has never seen.
const UNSEEN_HASHTAG: &str = "zzz-never-seen";

/// Knobs of the generator. Default: seed 42, dogs 5000, days 28, no drift.
#[derive(Clone, Debug)]
pub struct SniffableConfig {
    /// Seed of every random draw: the same config writes the same bytes.
    pub seed: u64,
    /// Number of dogs in the network; at least 2.
    pub dogs: usize,
    /// Number of days of follows and posts from [`START_TIME`]; at least 1.
    pub days: u32,
    /// A concept drift: from the start of this day (0 is the first) on, every hashtag's effect
    /// on the like rate is negated, so tags that helped a post now hurt it and the other way
    /// round. Dogs, follows, posts and hours are unchanged. `None`: the world is stationary.
    pub drift_at_day: Option<u32>,
}

impl Default for SniffableConfig {
    fn default() -> Self {
        SniffableConfig {
            seed: 42,
            dogs: 5000,
            days: 28,
            drift_at_day: None,
        }
    }
}

/// What was written.
#[derive(Clone, Debug, serde::Serialize)]
pub struct GenerateReport {
    /// Rows of `follows.csv`.
    pub follows: usize,
    /// Rows of `posts.csv`.
    pub posts: usize,
    /// Rows of `likes.csv`, in the label window and later.
    pub likes: usize,
    /// Share of posts that are popular (0 when there are no posts).
    pub positive_rate: f64,
    /// Lines of `queries.jsonl`.
    pub queries: usize,
    /// The files written, in the order they were written.
    pub files: Vec<std::path::PathBuf>,
}

/// Why the generator could not write its files.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// Followers and likers are other dogs, so a network needs two of them.
    #[error("invalid Sniffable config: dogs is {dogs}, but the network needs at least 2 dogs")]
    TooFewDogs {
        /// The configured number of dogs.
        dogs: usize,
    },
    /// Dogs are numbered with 32 bits.
    #[error(
        "invalid Sniffable config: dogs is {dogs}, more than the limit of {}",
        u32::MAX
    )]
    TooManyDogs {
        /// The configured number of dogs.
        dogs: usize,
    },
    /// Posts and follows happen during the days, so there must be one.
    #[error("invalid Sniffable config: days is 0, but the data needs at least 1 day")]
    NoDays,
    /// A drift must happen on one of the days, after the first, or there is nothing before it.
    #[error(
        "invalid Sniffable config: drift at day {day}, but the days run from 0 to {last} and the \
         drift needs at least one day before it"
    )]
    DriftOutsideDays {
        /// The configured drift day.
        day: u32,
        /// The last day.
        last: u32,
    },
    /// The output directory could not be created.
    #[error("cannot create output directory {}: {source}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// What went wrong.
        source: io::Error,
    },
    /// A file could not be written or moved into place: the message names it.
    #[error(transparent)]
    File(#[from] FileError),
}

/// Writes a Sniffable world for `config` into `out_dir` (created if missing): `follows.csv`,
/// `posts.csv`, `likes.csv`, `queries.jsonl` and `truth.json`. See the module documentation for
/// the model and the formats.
pub fn generate_sniffable(
    config: &SniffableConfig,
    out_dir: &Path,
) -> Result<GenerateReport, GenerateError> {
    // check the config before touching the disk
    if config.dogs < 2 {
        return Err(GenerateError::TooFewDogs { dogs: config.dogs });
    }
    if u32::try_from(config.dogs).is_err() {
        return Err(GenerateError::TooManyDogs { dogs: config.dogs });
    }
    if config.days == 0 {
        return Err(GenerateError::NoDays);
    }
    if let Some(day) = config.drift_at_day
        && (day == 0 || day >= config.days)
    {
        return Err(GenerateError::DriftOutsideDays {
            day,
            last: config.days - 1,
        });
    }

    // draw the world, one random stream per phase
    let model = Model::new(config.drift_at_day);
    let dogs = draw_dogs(&mut phase_rng(config.seed, Phase::Dogs), config.dogs);
    let vocabulary = Vocabulary::draw(&mut phase_rng(config.seed, Phase::Vocabulary));
    let follows = draw_follows(
        &mut phase_rng(config.seed, Phase::Follows),
        &dogs,
        config.days,
    );
    let followers = Followers::index(&follows, dogs.len());
    let posts = draw_posts(
        &mut phase_rng(config.seed, Phase::Posts),
        &dogs,
        &vocabulary,
        config.days,
    );
    let (outcomes, likes) = draw_likes(
        &mut phase_rng(config.seed, Phase::Likes),
        &model,
        &dogs,
        &vocabulary,
        &followers,
        &posts,
    );

    // probe queries, just after everything has happened
    let last_fact_time = [
        follows.last().map(|follow| follow.time),
        posts.last().map(|post| post.time),
        likes.last().map(|like| like.time),
    ]
    .into_iter()
    .flatten()
    .max()
    .unwrap_or(START_TIME);
    let query_time = (last_fact_time / SECS_PER_HOUR + 1) * SECS_PER_HOUR;
    let queries = probe_queries(&dogs, &vocabulary, query_time);

    // write the files
    fs::create_dir_all(out_dir).map_err(|source| GenerateError::CreateDir {
        path: out_dir.to_path_buf(),
        source,
    })?;
    let files = vec![
        files::replace_with(out_dir, "follows.csv", |writer| {
            write_follows(writer, &follows)
        })?,
        files::replace_with(out_dir, "posts.csv", |writer| {
            write_posts(writer, &posts, &outcomes, &vocabulary)
        })?,
        files::replace_with(out_dir, "likes.csv", |writer| write_likes(writer, &likes))?,
        files::replace_with(out_dir, "queries.jsonl", |writer| {
            write_queries(writer, &queries)
        })?,
        files::replace_with(out_dir, "truth.json", |writer| {
            let truth = TruthFile::new(config, &model, &dogs, &vocabulary, &followers, &queries);
            serde_json::to_writer_pretty(&mut *writer, &truth)?;
            writer.write_all(b"\n")
        })?,
    ];

    let popular = outcomes
        .iter()
        .filter(|outcome| outcome.window_likes >= u64::from(LABEL_AT_LEAST))
        .count();
    let positive_rate = if posts.is_empty() {
        0.0
    } else {
        popular as f64 / posts.len() as f64
    };
    Ok(GenerateReport {
        follows: follows.len(),
        posts: posts.len(),
        likes: likes.len(),
        positive_rate,
        queries: queries.len(),
        files,
    })
}

/// The phases of generation, each drawing from its own ChaCha stream.
#[derive(Clone, Copy)]
enum Phase {
    Dogs = 1,
    Vocabulary = 2,
    Follows = 3,
    Posts = 4,
    Likes = 5,
}

fn phase_rng(seed: u64, phase: Phase) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(phase as u64);
    rng
}

/// The parameters of the like rate that do not depend on the seed.
struct Model {
    /// `γ_h` for each hour of the day.
    hour_effects: [f64; 24],
    /// From this time on, hashtag effects are negated (the drift); `u64::MAX` when there is none.
    drift_time: u64,
}

impl Model {
    fn new(drift_at_day: Option<u32>) -> Self {
        Model {
            hour_effects: std::array::from_fn(|hour| {
                HOUR_EFFECT_AMPLITUDE * (TAU * (hour as f64 - LIKE_PEAK_HOUR) / 24.0).cos()
            }),
            drift_time: drift_at_day
                .map_or(u64::MAX, |day| START_TIME + u64::from(day) * SECS_PER_DAY),
        }
    }

    /// The sum of the drawn tags' effects `Σ β_h` as it holds at `time`: negated from the drift
    /// on.
    fn hashtag_effect_at(&self, drawn_effects: f64, time: u64) -> f64 {
        if time >= self.drift_time {
            -drawn_effects
        } else {
            drawn_effects
        }
    }

    /// `ln λ` of a post (or query) by a dog of `popularity` with `followers` at `time`, whose
    /// hashtags' effects sum to `hashtag_effect`.
    fn log_like_rate(
        &self,
        popularity: f64,
        hashtag_effect: f64,
        time: u64,
        followers: usize,
    ) -> f64 {
        INTERCEPT
            + popularity
            + hashtag_effect
            + self.hour_effects[hour_of_day(time)]
            + FOLLOWER_COEFFICIENT * (1.0 + followers as f64).ln()
    }
}

/// The UTC hour of day of `time`, which is at or after [`START_TIME`] (midnight UTC).
fn hour_of_day(time: u64) -> usize {
    (time.saturating_sub(START_TIME) % SECS_PER_DAY / SECS_PER_HOUR) as usize
}

/// A dog's latent traits.
struct Dog {
    /// `z_d`, added to the log like rate of every post.
    popularity: f64,
    /// `a_d`, the mean number of posts a day.
    activity_per_day: f64,
}

fn draw_dogs(rng: &mut ChaCha8Rng, dogs: usize) -> Vec<Dog> {
    // the lognormal's mean is exp(μ + σ²/2), which this log mean makes 1
    let activity_log_mean = -ACTIVITY_LOG_SD * ACTIVITY_LOG_SD / 2.0;
    (0..dogs)
        .map(|_| {
            let popularity = POPULARITY_SD * rng.sample::<f64, _>(StandardNormal);
            let activity_per_day = (activity_log_mean
                + ACTIVITY_LOG_SD * rng.sample::<f64, _>(StandardNormal))
            .exp()
            .min(ACTIVITY_CAP_PER_DAY);
            Dog {
                popularity,
                activity_per_day,
            }
        })
        .collect()
}

/// Draws indices with probability proportional to fixed positive weights, by binary search in
/// the cumulative sums: O(log n) a draw, and simple enough to be reproducible by hand.
struct WeightedTable {
    cumulative: Vec<f64>,
}

impl WeightedTable {
    /// A table over `weights`, which must be positive and finite, and at least one.
    fn new(weights: impl IntoIterator<Item = f64>) -> Self {
        let mut total = 0.0;
        let cumulative = weights
            .into_iter()
            .map(|weight| {
                total += weight;
                total
            })
            .collect();
        WeightedTable { cumulative }
    }

    fn total(&self) -> f64 {
        self.cumulative.last().copied().unwrap_or(0.0)
    }

    fn sample(&self, rng: &mut ChaCha8Rng) -> usize {
        let target = rng.random::<f64>() * self.total();
        let index = self.cumulative.partition_point(|&sum| sum <= target);
        // rounding can put the target at the very end
        index.min(self.cumulative.len().saturating_sub(1))
    }
}

/// The hashtags, in order of how often they are used.
struct Vocabulary {
    names: Vec<String>,
    /// Probability that a drawn tag is this one.
    usage: Vec<f64>,
    usage_table: WeightedTable,
    /// `β_h` of each tag.
    effects: Vec<f64>,
}

impl Vocabulary {
    fn draw(rng: &mut ChaCha8Rng) -> Self {
        let mut words = HASHTAG_WORDS.split_whitespace();
        let names: Vec<String> = (0..VOCABULARY_SIZE)
            .map(|rank| match words.next() {
                Some(word) => word.to_string(),
                None => format!("tag{rank}"),
            })
            .collect();
        let weights: Vec<f64> = (0..VOCABULARY_SIZE)
            .map(|rank| (rank as f64 + 1.0).powf(-HASHTAG_ZIPF_EXPONENT))
            .collect();
        let total: f64 = weights.iter().sum();
        let usage: Vec<f64> = weights.iter().map(|weight| weight / total).collect();
        let raw_effects: Vec<f64> = (0..VOCABULARY_SIZE)
            .map(|_| HASHTAG_EFFECT_SD * rng.sample::<f64, _>(StandardNormal))
            .collect();
        // Center the effects on the average drawn tag, so that the few most used tags cannot
        // move the whole like rate (and the positive rate) up or down from one seed to the next.
        let mean_drawn_effect: f64 = raw_effects
            .iter()
            .zip(&usage)
            .map(|(effect, share)| effect * share)
            .sum();
        let effects = raw_effects
            .iter()
            .map(|effect| effect - mean_drawn_effect)
            .collect();
        Vocabulary {
            names,
            usage,
            usage_table: WeightedTable::new(weights),
            effects,
        }
    }
}

/// `follower` follows `followee` from `time` on.
struct Follow {
    follower: u32,
    followee: u32,
    time: u64,
}

fn draw_follows(rng: &mut ChaCha8Rng, dogs: &[Dog], days: u32) -> Vec<Follow> {
    let span_secs = u64::from(days) * SECS_PER_DAY;
    let attraction: Vec<f64> = dogs.iter().map(|dog| dog.popularity.exp()).collect();
    let table = WeightedTable::new(attraction.iter().copied());
    let others = dogs.len() - 1;
    // chosen_by[j] == follower marks j as taken (or as the follower itself) for this follower
    let mut chosen_by = vec![usize::MAX; dogs.len()];
    let mut followees: Vec<usize> = Vec::with_capacity(FOLLOWS_PER_DOG_MAX);
    let mut race: Vec<(f64, usize)> = Vec::new();
    let mut follows = Vec::new();
    for follower in 0..dogs.len() {
        let wanted = rng
            .random_range(FOLLOWS_PER_DOG_MIN..=FOLLOWS_PER_DOG_MAX)
            .min(others);
        followees.clear();
        chosen_by[follower] = follower;
        if wanted * 4 >= others {
            // A small network: rejection would keep hitting taken dogs, so run an exponential
            // race instead (Efraimidis–Spirakis), which draws without replacement exactly in
            // proportion to the weights.
            race.clear();
            race.extend(
                (0..dogs.len())
                    .filter(|&candidate| candidate != follower)
                    .map(|candidate| {
                        let arrival = -(1.0 - rng.random::<f64>()).ln() / attraction[candidate];
                        (arrival, candidate)
                    }),
            );
            race.sort_by(|left, right| left.0.total_cmp(&right.0).then(left.1.cmp(&right.1)));
            followees.extend(race.iter().take(wanted).map(|&(_, candidate)| candidate));
        } else {
            // A large network: at most a quarter of the others can be taken, so rejection
            // succeeds quickly.
            while followees.len() < wanted {
                let candidate = table.sample(rng);
                if chosen_by[candidate] != follower {
                    chosen_by[candidate] = follower;
                    followees.push(candidate);
                }
            }
        }
        for &followee in &followees {
            let time = if rng.random_bool(INITIAL_FOLLOW_SHARE) {
                START_TIME
            } else {
                START_TIME + rng.random_range(1..span_secs)
            };
            follows.push(Follow {
                follower: follower as u32,
                followee: followee as u32,
                time,
            });
        }
    }
    // stable: ties stay in generation order
    follows.sort_by_key(|follow| follow.time);
    follows
}

/// Each dog's followers as `(time, follower)`, in time order.
struct Followers {
    by_dog: Vec<Vec<(u64, u32)>>,
}

impl Followers {
    /// Indexes follows that are already sorted by time.
    fn index(follows: &[Follow], dogs: usize) -> Self {
        let mut by_dog = vec![Vec::new(); dogs];
        for follow in follows {
            by_dog[follow.followee as usize].push((follow.time, follow.follower));
        }
        Followers { by_dog }
    }

    /// The followers of `dog` whose follow is strictly before `time`.
    fn before(&self, dog: usize, time: u64) -> &[(u64, u32)] {
        let all = &self.by_dog[dog];
        &all[..all.partition_point(|&(follow_time, _)| follow_time < time)]
    }
}

/// A post, before it has likes. Its id is its index in time order.
struct Post {
    dog: u32,
    time: u64,
    /// Ranks in the vocabulary, ascending.
    hashtags: Vec<u16>,
}

fn draw_posts(rng: &mut ChaCha8Rng, dogs: &[Dog], vocabulary: &Vocabulary, days: u32) -> Vec<Post> {
    let hour_table = WeightedTable::new((0..24).map(|hour| {
        1.0 + POSTING_HOUR_AMPLITUDE * (TAU * (f64::from(hour) - POSTING_PEAK_HOUR) / 24.0).cos()
    }));
    let hashtag_count_table = WeightedTable::new(HASHTAG_COUNT_PROBABILITIES);
    let mut posts = Vec::new();
    for (dog, traits) in dogs.iter().enumerate() {
        // A Poisson process with a rate that depends only on the hour of day: draw how many
        // posts, then place each independently by day, hour (weighted) and second.
        let count = draw_poisson(rng, traits.activity_per_day * f64::from(days));
        for _ in 0..count {
            let day = u64::from(rng.random_range(0..days));
            let hour = hour_table.sample(rng) as u64;
            let second = rng.random_range(0..SECS_PER_HOUR);
            let time = START_TIME + day * SECS_PER_DAY + hour * SECS_PER_HOUR + second;
            let tag_count = hashtag_count_table.sample(rng);
            let mut hashtags: Vec<u16> = Vec::with_capacity(tag_count);
            while hashtags.len() < tag_count {
                let rank = vocabulary.usage_table.sample(rng) as u16;
                if !hashtags.contains(&rank) {
                    hashtags.push(rank);
                }
            }
            hashtags.sort_unstable();
            posts.push(Post {
                dog: dog as u32,
                time,
                hashtags,
            });
        }
    }
    // stable: ties stay in generation order
    posts.sort_by_key(|post| post.time);
    posts
}

/// What the model made of a post.
struct PostOutcome {
    /// `P(Poisson(λ) ≥ LABEL_AT_LEAST)`.
    truth_p: f64,
    /// The realised `N`.
    window_likes: u64,
}

/// Post `post` (an index in time order) is liked by `liker` at `time`.
struct Like {
    post: u32,
    liker: u32,
    time: u64,
}

fn draw_likes(
    rng: &mut ChaCha8Rng,
    model: &Model,
    dogs: &[Dog],
    vocabulary: &Vocabulary,
    followers: &Followers,
    posts: &[Post],
) -> (Vec<PostOutcome>, Vec<Like>) {
    let mut outcomes = Vec::with_capacity(posts.len());
    let mut likes = Vec::new();
    // last_liked[dog] == post index means the dog has already liked that post
    let mut last_liked = vec![usize::MAX; dogs.len()];
    for (post_index, post) in posts.iter().enumerate() {
        let author = post.dog as usize;
        let audience = followers.before(author, post.time);
        let hashtag_effect: f64 = post
            .hashtags
            .iter()
            .map(|&rank| vocabulary.effects[usize::from(rank)])
            .sum();
        let like_rate = model
            .log_like_rate(
                dogs[author].popularity,
                model.hashtag_effect_at(hashtag_effect, post.time),
                post.time,
                audience.len(),
            )
            .exp();
        let window_likes = draw_poisson(rng, like_rate);
        let later_likes = draw_poisson(rng, LATER_LIKE_RATIO * like_rate);
        for like_number in 0..window_likes + later_likes {
            let liker = draw_liker(
                rng,
                author,
                audience,
                &mut last_liked,
                post_index,
                like_number,
            );
            let delay_secs = if like_number < window_likes {
                1 + truncated_exponential(rng, LIKE_DECAY_SECS, LABEL_WITHIN_SECS - 1)
            } else {
                LABEL_WITHIN_SECS
                    + truncated_exponential(
                        rng,
                        LATER_LIKE_DECAY_SECS,
                        LATER_LIKES_UNTIL_SECS - LABEL_WITHIN_SECS,
                    )
            };
            likes.push(Like {
                post: post_index as u32,
                liker: liker as u32,
                time: post.time + delay_secs,
            });
        }
        outcomes.push(PostOutcome {
            truth_p: poisson_at_least(like_rate, LABEL_AT_LEAST),
            window_likes,
        });
    }
    // stable: ties stay in generation order
    likes.sort_by_key(|like| like.time);
    (outcomes, likes)
}

/// A dog to like `post_index` by `author`: mostly one of `audience` (the author's followers),
/// otherwise anyone else, and not a dog that already liked it while one is left.
fn draw_liker(
    rng: &mut ChaCha8Rng,
    author: usize,
    audience: &[(u64, u32)],
    last_liked: &mut [usize],
    post_index: usize,
    likes_so_far: u64,
) -> usize {
    let dogs = last_liked.len();
    let any_other_dog = |rng: &mut ChaCha8Rng| {
        let draw = rng.random_range(0..dogs - 1);
        if draw >= author { draw + 1 } else { draw }
    };
    if likes_so_far >= (dogs - 1) as u64 {
        // every other dog has liked it already: the post is bigger than the network
        return any_other_dog(rng);
    }
    for _ in 0..LIKER_ATTEMPTS {
        let candidate = if !audience.is_empty() && rng.random_bool(FOLLOWER_LIKER_SHARE) {
            audience[rng.random_range(0..audience.len())].1 as usize
        } else {
            any_other_dog(rng)
        };
        if last_liked[candidate] != post_index {
            last_liked[candidate] = post_index;
            return candidate;
        }
    }
    // Nearly everyone has liked it: walk from a random dog to the first one that has not.
    // One exists, because fewer than `dogs - 1` dogs have liked the post.
    let start = rng.random_range(0..dogs);
    let candidate = (0..dogs)
        .map(|step| (start + step) % dogs)
        .find(|&candidate| candidate != author && last_liked[candidate] != post_index)
        .unwrap_or_else(|| any_other_dog(rng));
    last_liked[candidate] = post_index;
    candidate
}

/// Whole seconds `⌊X⌋` with `X` exponential of mean `mean_secs`, truncated to `[0, range_secs)`,
/// by inverting the truncated distribution function. The result is below `range_secs`.
fn truncated_exponential(rng: &mut ChaCha8Rng, mean_secs: f64, range_secs: u64) -> u64 {
    let mass_inside = 1.0 - (-(range_secs as f64) / mean_secs).exp();
    let uniform = rng.random::<f64>();
    let seconds = -mean_secs * (1.0 - uniform * mass_inside).ln();
    (seconds.floor() as u64).min(range_secs.saturating_sub(1))
}

/// A Poisson draw of the given mean.
fn draw_poisson(rng: &mut ChaCha8Rng, mean: f64) -> u64 {
    // Means here are products and exponentials of bounded draws: positive and finite, far
    // below Poisson::MAX_LAMBDA. A failure would be a bug in this file, not bad input.
    let distribution = Poisson::new(mean).expect("Poisson means are positive and finite");
    distribution.sample(rng) as u64
}

/// `P(Poisson(rate) ≥ at_least)`, to full precision at both ends.
///
/// Each pmf term is computed in log space, `ln p(j) = j ln λ − λ − ln j!`, so large rates do not
/// overflow. When the answer is small (`rate < at_least`) the upper tail is summed directly
/// instead of subtracting the lower tail from 1, which would cancel.
fn poisson_at_least(rate: f64, at_least: u32) -> f64 {
    if at_least == 0 {
        return 1.0;
    }
    let log_rate = rate.ln();
    let log_pmf = |count: u32| {
        let log_factorial: f64 = (2..=count).map(|factor| f64::from(factor).ln()).sum();
        f64::from(count) * log_rate - rate - log_factorial
    };
    if rate < f64::from(at_least) {
        // terms shrink by rate / (j + 1) < 1 from here on
        let mut term = log_pmf(at_least).exp();
        let mut tail = 0.0;
        let mut count = at_least;
        while term > tail * f64::EPSILON / 4.0 && term > 0.0 {
            tail += term;
            count += 1;
            term *= rate / f64::from(count);
        }
        tail.min(1.0)
    } else {
        let below: f64 = (0..at_least).map(|count| log_pmf(count).exp()).sum();
        (1.0 - below).clamp(0.0, 1.0)
    }
}

/// One line of `queries.jsonl`.
#[derive(Serialize)]
struct Query {
    id: String,
    dog: String,
    hashtags: Vec<String>,
    time: u64,
    /// The dog's index, when it is a known dog. Not written to the queries file.
    #[serde(skip)]
    known_dog: Option<usize>,
}

/// The eight probe queries: the two most and two least popular dogs, two typical dogs, a dog the
/// data has never seen, and a typical dog with a tag the data has never seen.
fn probe_queries(dogs: &[Dog], vocabulary: &Vocabulary, time: u64) -> Vec<Query> {
    let mut by_popularity: Vec<usize> = (0..dogs.len()).collect();
    by_popularity.sort_by(|&left, &right| {
        dogs[left]
            .popularity
            .total_cmp(&dogs[right].popularity)
            .then(left.cmp(&right))
    });
    let count = by_popularity.len();
    let median = count / 2;
    let tags = |ranks: &[usize]| -> Vec<String> {
        ranks
            .iter()
            .map(|&rank| vocabulary.names[rank].clone())
            .collect()
    };
    let plan: [(Option<usize>, Vec<String>); 8] = [
        (Some(by_popularity[count - 1]), tags(&[0, 1])),
        (Some(by_popularity[count - 2]), tags(&[])),
        (Some(by_popularity[0]), tags(&[0])),
        (Some(by_popularity[1]), tags(&[2, 3])),
        (Some(by_popularity[median]), tags(&[])),
        (Some(by_popularity[median - 1]), tags(&[1, 4])),
        (None, tags(&[0])),
        (
            Some(by_popularity[(median + 1).min(count - 1)]),
            vec![UNSEEN_HASHTAG.to_string()],
        ),
    ];
    plan.into_iter()
        .enumerate()
        .map(|(index, (known_dog, hashtags))| Query {
            id: format!("q{}", index + 1),
            dog: known_dog.map_or_else(|| UNKNOWN_DOG.to_string(), |dog| format!("dog-{dog}")),
            hashtags,
            time,
            known_dog,
        })
        .collect()
}

fn write_follows(writer: &mut impl Write, follows: &[Follow]) -> io::Result<()> {
    writer.write_all(b"follower,followee,time\n")?;
    for follow in follows {
        writeln!(
            writer,
            "dog-{},dog-{},{}",
            follow.follower, follow.followee, follow.time
        )?;
    }
    Ok(())
}

fn write_posts(
    writer: &mut impl Write,
    posts: &[Post],
    outcomes: &[PostOutcome],
    vocabulary: &Vocabulary,
) -> io::Result<()> {
    writer.write_all(b"post,dog,hashtags,time,truth_p\n")?;
    for (index, (post, outcome)) in posts.iter().zip(outcomes).enumerate() {
        write!(writer, "p-{index},dog-{},", post.dog)?;
        for (position, &rank) in post.hashtags.iter().enumerate() {
            if position > 0 {
                writer.write_all(b"|")?;
            }
            writer.write_all(vocabulary.names[usize::from(rank)].as_bytes())?;
        }
        writeln!(writer, ",{},{:.6}", post.time, outcome.truth_p)?;
    }
    Ok(())
}

fn write_likes(writer: &mut impl Write, likes: &[Like]) -> io::Result<()> {
    writer.write_all(b"post,dog,time\n")?;
    for like in likes {
        writeln!(writer, "p-{},dog-{},{}", like.post, like.liker, like.time)?;
    }
    Ok(())
}

fn write_queries(writer: &mut impl Write, queries: &[Query]) -> io::Result<()> {
    for query in queries {
        serde_json::to_writer(&mut *writer, query)?;
        writer.write_all(b"\n")?;
    }
    Ok(())
}

/// `truth.json`: everything needed to recompute each post's `truth_p` from the fact files.
#[derive(Serialize)]
struct TruthFile<'a> {
    generator: &'static str,
    config: ConfigRecord,
    start_time: u64,
    /// One past the last second in which follows and posts happen.
    end_time: u64,
    label: LabelRecord,
    model: ModelRecord<'a>,
    /// The concept drift, or null for a stationary world.
    drift: Option<DriftRecord>,
    dogs: Vec<DogRecord>,
    queries: Vec<QueryTruth<'a>>,
}

#[derive(Serialize)]
struct ConfigRecord {
    seed: u64,
    dogs: usize,
    days: u32,
    drift_at_day: Option<u32>,
}

/// What changes at the drift, in `truth.json`.
#[derive(Serialize)]
struct DriftRecord {
    day: u32,
    /// The first second of the drift day: facts at or after it follow the changed model.
    time: u64,
    change: &'static str,
}

#[derive(Serialize)]
struct LabelRecord {
    definition: &'static str,
    within_secs: u64,
    at_least: u32,
}

#[derive(Serialize)]
struct ModelRecord<'a> {
    log_like_rate: &'static str,
    intercept: f64,
    follower_coefficient: f64,
    /// `γ_h`, indexed by UTC hour of day.
    hour_effects: Vec<f64>,
    hashtag_effects: BTreeMap<&'a str, f64>,
    /// Tags not in `hashtag_effects` (such as the probe's unseen tag) have no effect.
    unknown_hashtag_effect: f64,
    hashtag_usage: BTreeMap<&'a str, f64>,
    hashtag_count_probabilities: Vec<f64>,
    popularity_sd: f64,
    hashtag_effect_sd: f64,
    activity_log_sd: f64,
    activity_cap_per_day: f64,
    follows_per_dog_min: usize,
    follows_per_dog_max: usize,
    initial_follow_share: f64,
    follow_attraction: &'static str,
    posting_peak_hour: f64,
    posting_hour_amplitude: f64,
    like_decay_secs: f64,
    later_like_ratio: f64,
    later_like_decay_secs: f64,
    later_likes_until_secs: u64,
    follower_liker_share: f64,
}

#[derive(Serialize)]
struct DogRecord {
    dog: String,
    popularity: f64,
    activity_per_day: f64,
    /// Followers once every follow has happened.
    followers_at_end: usize,
}

#[derive(Serialize)]
struct QueryTruth<'a> {
    id: &'a str,
    dog: &'a str,
    /// `λ` at the query time; absent for a dog the model does not know.
    like_rate: Option<f64>,
    truth_p: Option<f64>,
}

impl<'a> TruthFile<'a> {
    fn new(
        config: &SniffableConfig,
        model: &Model,
        dogs: &[Dog],
        vocabulary: &'a Vocabulary,
        followers: &Followers,
        queries: &'a [Query],
    ) -> Self {
        let hashtag_effects = vocabulary
            .names
            .iter()
            .zip(&vocabulary.effects)
            .map(|(name, &effect)| (name.as_str(), effect))
            .collect();
        let hashtag_usage = vocabulary
            .names
            .iter()
            .zip(&vocabulary.usage)
            .map(|(name, &usage)| (name.as_str(), usage))
            .collect();
        let dog_records = dogs
            .iter()
            .enumerate()
            .map(|(index, dog)| DogRecord {
                dog: format!("dog-{index}"),
                popularity: dog.popularity,
                activity_per_day: dog.activity_per_day,
                followers_at_end: followers.by_dog[index].len(),
            })
            .collect();
        let query_truths = queries
            .iter()
            .map(|query| {
                let like_rate = query.known_dog.map(|dog| {
                    let hashtag_effect: f64 = query
                        .hashtags
                        .iter()
                        .filter_map(|tag| vocabulary.names.iter().position(|name| name == tag))
                        .map(|rank| vocabulary.effects[rank])
                        .sum();
                    let audience = followers.before(dog, query.time).len();
                    model
                        .log_like_rate(
                            dogs[dog].popularity,
                            model.hashtag_effect_at(hashtag_effect, query.time),
                            query.time,
                            audience,
                        )
                        .exp()
                });
                QueryTruth {
                    id: &query.id,
                    dog: &query.dog,
                    like_rate,
                    truth_p: like_rate.map(|rate| poisson_at_least(rate, LABEL_AT_LEAST)),
                }
            })
            .collect();
        TruthFile {
            generator: "sniffable",
            config: ConfigRecord {
                seed: config.seed,
                dogs: config.dogs,
                days: config.days,
                drift_at_day: config.drift_at_day,
            },
            start_time: START_TIME,
            end_time: START_TIME + u64::from(config.days) * SECS_PER_DAY,
            label: LabelRecord {
                definition: "a post is popular if it has at least `at_least` likes with \
                             time < post time + `within_secs`; truth_p = P(Poisson(like rate) \
                             >= at_least)",
                within_secs: LABEL_WITHIN_SECS,
                at_least: LABEL_AT_LEAST,
            },
            model: ModelRecord {
                log_like_rate: "ln(like rate) = intercept + popularity[dog] \
                                + sum of hashtag_effects[tag] + hour_effects[UTC hour of post] \
                                + follower_coefficient * ln(1 + follows of dog with time < post time)",
                intercept: INTERCEPT,
                follower_coefficient: FOLLOWER_COEFFICIENT,
                hour_effects: model.hour_effects.to_vec(),
                hashtag_effects,
                unknown_hashtag_effect: 0.0,
                hashtag_usage,
                hashtag_count_probabilities: HASHTAG_COUNT_PROBABILITIES.to_vec(),
                popularity_sd: POPULARITY_SD,
                hashtag_effect_sd: HASHTAG_EFFECT_SD,
                activity_log_sd: ACTIVITY_LOG_SD,
                activity_cap_per_day: ACTIVITY_CAP_PER_DAY,
                follows_per_dog_min: FOLLOWS_PER_DOG_MIN,
                follows_per_dog_max: FOLLOWS_PER_DOG_MAX,
                initial_follow_share: INITIAL_FOLLOW_SHARE,
                follow_attraction: "followees drawn without replacement with weight exp(popularity)",
                posting_peak_hour: POSTING_PEAK_HOUR,
                posting_hour_amplitude: POSTING_HOUR_AMPLITUDE,
                like_decay_secs: LIKE_DECAY_SECS,
                later_like_ratio: LATER_LIKE_RATIO,
                later_like_decay_secs: LATER_LIKE_DECAY_SECS,
                later_likes_until_secs: LATER_LIKES_UNTIL_SECS,
                follower_liker_share: FOLLOWER_LIKER_SHARE,
            },
            drift: config.drift_at_day.map(|day| DriftRecord {
                day,
                time: model.drift_time,
                change: "for posts and queries at or after `time`, every hashtag effect is \
                         negated: the like rate uses -hashtag_effects[tag] in place of \
                         hashtag_effects[tag]",
            }),
            dogs: dog_records,
            queries: query_truths,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use super::*;

    fn small_config(seed: u64) -> SniffableConfig {
        SniffableConfig {
            seed,
            dogs: 200,
            days: 5,
            drift_at_day: None,
        }
    }

    struct ParsedPost {
        id: String,
        dog: String,
        hashtags: Vec<String>,
        time: u64,
        truth_p: f64,
    }

    /// A generated world, read back from its files.
    struct World {
        directory: tempfile::TempDir,
        report: GenerateReport,
        follows: Vec<(String, String, u64)>,
        posts: Vec<ParsedPost>,
        likes: Vec<(String, String, u64)>,
        queries: Vec<serde_json::Value>,
        truth: serde_json::Value,
    }

    impl World {
        /// `N` of each post: its likes strictly inside the label window.
        fn window_likes(&self) -> Vec<u64> {
            let index: HashMap<&str, usize> = self
                .posts
                .iter()
                .enumerate()
                .map(|(position, post)| (post.id.as_str(), position))
                .collect();
            let mut counts = vec![0; self.posts.len()];
            for (post, _, time) in &self.likes {
                let position = index[post.as_str()];
                if *time < self.posts[position].time + LABEL_WITHIN_SECS {
                    counts[position] += 1;
                }
            }
            counts
        }

        fn labels(&self) -> Vec<bool> {
            self.window_likes()
                .into_iter()
                .map(|count| count >= u64::from(LABEL_AT_LEAST))
                .collect()
        }
    }

    /// The rows of a CSV file, after checking its header and line ends.
    fn read_csv(path: &Path, header: &str) -> Vec<Vec<String>> {
        let text = fs::read_to_string(path).unwrap();
        assert!(text.ends_with('\n') && !text.contains('\r'), "{path:?}");
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some(header), "{path:?}");
        lines
            .map(|line| line.split(',').map(str::to_string).collect())
            .collect()
    }

    fn triple(row: Vec<String>) -> (String, String, u64) {
        assert_eq!(row.len(), 3, "{row:?}");
        (row[0].clone(), row[1].clone(), row[2].parse().unwrap())
    }

    fn generate(config: &SniffableConfig) -> World {
        let directory = tempfile::tempdir().unwrap();
        let report = generate_sniffable(config, directory.path()).unwrap();
        let path = |name: &str| directory.path().join(name);
        let follows = read_csv(&path("follows.csv"), "follower,followee,time")
            .into_iter()
            .map(triple)
            .collect();
        let posts = read_csv(&path("posts.csv"), "post,dog,hashtags,time,truth_p")
            .into_iter()
            .map(|row| {
                assert_eq!(row.len(), 5, "{row:?}");
                ParsedPost {
                    id: row[0].clone(),
                    dog: row[1].clone(),
                    hashtags: match row[2].as_str() {
                        "" => Vec::new(),
                        tags => tags.split('|').map(str::to_string).collect(),
                    },
                    time: row[3].parse().unwrap(),
                    truth_p: row[4].parse().unwrap(),
                }
            })
            .collect();
        let likes = read_csv(&path("likes.csv"), "post,dog,time")
            .into_iter()
            .map(triple)
            .collect();
        let queries = fs::read_to_string(path("queries.jsonl"))
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        let truth = serde_json::from_str(&fs::read_to_string(path("truth.json")).unwrap()).unwrap();
        World {
            directory,
            report,
            follows,
            posts,
            likes,
            queries,
            truth,
        }
    }

    /// Area under the ROC curve, ties counted as half.
    fn auc(scores: &[f64], labels: &[bool]) -> f64 {
        let mut order: Vec<usize> = (0..scores.len()).collect();
        order.sort_by(|&left, &right| scores[left].total_cmp(&scores[right]));
        let mut positive_rank_sum = 0.0;
        let mut start = 0;
        while start < order.len() {
            let mut end = start;
            while end < order.len() && scores[order[end]] == scores[order[start]] {
                end += 1;
            }
            let average_rank = (start + end + 1) as f64 / 2.0;
            positive_rank_sum += average_rank
                * order[start..end]
                    .iter()
                    .filter(|&&index| labels[index])
                    .count() as f64;
            start = end;
        }
        let positives = labels.iter().filter(|&&label| label).count() as f64;
        let negatives = labels.len() as f64 - positives;
        (positive_rank_sum - positives * (positives + 1.0) / 2.0) / (positives * negatives)
    }

    const FILES: [&str; 5] = [
        "follows.csv",
        "posts.csv",
        "likes.csv",
        "queries.jsonl",
        "truth.json",
    ];

    #[test]
    fn same_config_writes_same_bytes_and_another_seed_does_not() {
        let first = generate(&small_config(3));
        let again = generate(&small_config(3));
        let other = generate(&small_config(4));
        for name in FILES {
            let bytes = |world: &World| fs::read(world.directory.path().join(name)).unwrap();
            assert_eq!(
                bytes(&first),
                bytes(&again),
                "{name} differs for the same seed"
            );
            assert_ne!(
                bytes(&first),
                bytes(&other),
                "{name} is the same for another seed"
            );
        }
        assert_eq!(
            first.report.files,
            FILES.map(|name| first.directory.path().join(name))
        );
    }

    #[test]
    fn files_are_sorted_and_refer_to_what_exists() {
        let world = generate(&small_config(5));
        let dogs: HashSet<String> = (0..200).map(|index| format!("dog-{index}")).collect();
        assert_eq!(world.report.follows, world.follows.len());
        assert_eq!(world.report.posts, world.posts.len());
        assert_eq!(world.report.likes, world.likes.len());
        assert!(world.posts.len() > 500, "{} posts", world.posts.len());
        assert!(world.likes.len() > 3 * world.posts.len());

        let sorted = |times: &[u64]| times.windows(2).all(|pair| pair[0] <= pair[1]);
        let times =
            |rows: &[(String, String, u64)]| rows.iter().map(|row| row.2).collect::<Vec<_>>();
        assert!(sorted(&times(&world.follows)));
        assert!(sorted(&times(&world.likes)));
        assert!(sorted(
            &world.posts.iter().map(|post| post.time).collect::<Vec<_>>()
        ));

        let end_time = START_TIME + 5 * SECS_PER_DAY;
        let mut pairs = HashSet::new();
        for (follower, followee, time) in &world.follows {
            assert!(dogs.contains(follower) && dogs.contains(followee));
            assert_ne!(follower, followee, "self-follow");
            assert!(
                pairs.insert((follower, followee)),
                "{follower} follows {followee} twice"
            );
            assert!((START_TIME..end_time).contains(time));
        }
        let at_start = world
            .follows
            .iter()
            .filter(|follow| follow.2 == START_TIME)
            .count();
        let share = at_start as f64 / world.follows.len() as f64;
        assert!(
            (0.65..0.75).contains(&share),
            "{share} of follows at the start"
        );

        let mut post_times = HashMap::new();
        for (position, post) in world.posts.iter().enumerate() {
            assert_eq!(post.id, format!("p-{position}"));
            assert!(dogs.contains(&post.dog));
            assert!((START_TIME..end_time).contains(&post.time));
            assert!((0.0..=1.0).contains(&post.truth_p));
            assert!(post.hashtags.len() <= 4);
            let distinct: HashSet<&String> = post.hashtags.iter().collect();
            assert_eq!(
                distinct.len(),
                post.hashtags.len(),
                "repeated tag in {}",
                post.id
            );
            for tag in &post.hashtags {
                assert!(
                    tag.bytes()
                        .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit()),
                    "{tag}"
                );
            }
            post_times.insert(post.id.as_str(), (post.time, post.dog.as_str()));
        }
        let mut liked = HashSet::new();
        for (post, liker, time) in &world.likes {
            let (post_time, author) = post_times[post.as_str()];
            assert!(
                *time > post_time,
                "{post} liked at {time}, posted at {post_time}"
            );
            assert!(*time < post_time + LATER_LIKES_UNTIL_SECS);
            assert!(dogs.contains(liker));
            assert_ne!(liker, author, "{liker} likes its own post");
            assert!(liked.insert((post, liker)), "{liker} likes {post} twice");
        }
        let entries: Vec<String> = fs::read_dir(world.directory.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(entries.len(), FILES.len(), "{entries:?}");
    }

    #[test]
    fn truth_p_matches_the_realised_labels() {
        let world = generate(&small_config(6));
        let labels = world.labels();
        let posts = labels.len() as f64;
        let positive_rate = labels.iter().filter(|&&label| label).count() as f64 / posts;
        assert_eq!(world.report.positive_rate, positive_rate);
        let mean_truth_p = world.posts.iter().map(|post| post.truth_p).sum::<f64>() / posts;
        assert!(
            (mean_truth_p - positive_rate).abs() < 0.03,
            "mean truth_p {mean_truth_p}, positive rate {positive_rate}"
        );
        assert!(
            (0.25..0.50).contains(&positive_rate),
            "positive rate {positive_rate}"
        );

        // calibrated in each third of truth_p too, not only on average
        let mut order: Vec<usize> = (0..labels.len()).collect();
        order.sort_by(|&left, &right| {
            world.posts[left]
                .truth_p
                .total_cmp(&world.posts[right].truth_p)
        });
        for third in order.chunks(order.len().div_ceil(3)) {
            let size = third.len() as f64;
            let predicted = third
                .iter()
                .map(|&index| world.posts[index].truth_p)
                .sum::<f64>()
                / size;
            let observed = third.iter().filter(|&&index| labels[index]).count() as f64 / size;
            assert!(
                (predicted - observed).abs() < 0.05,
                "predicted {predicted}, observed {observed}"
            );
        }
    }

    #[test]
    fn truth_p_ranks_the_labels_well() {
        let world = generate(&small_config(7));
        let scores: Vec<f64> = world.posts.iter().map(|post| post.truth_p).collect();
        let truth_auc = auc(&scores, &world.labels());
        assert!(truth_auc >= 0.75, "truth AUC {truth_auc}");
    }

    #[test]
    fn truth_json_recomputes_every_truth_p() {
        // stationary, and with a drift: truth.json says what changed, and it is enough
        let drifted = SniffableConfig {
            drift_at_day: Some(2),
            ..small_config(8)
        };
        for config in [small_config(8), drifted] {
            let world = generate(&config);
            let truth = &world.truth;
            let model = &truth["model"];
            let number = |value: &serde_json::Value| value.as_f64().unwrap();
            let intercept = number(&model["intercept"]);
            let follower_coefficient = number(&model["follower_coefficient"]);
            let hour_effects: Vec<f64> = model["hour_effects"]
                .as_array()
                .unwrap()
                .iter()
                .map(number)
                .collect();
            assert_eq!(hour_effects.len(), 24);
            let popularity: HashMap<&str, f64> = truth["dogs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|dog| (dog["dog"].as_str().unwrap(), number(&dog["popularity"])))
                .collect();
            assert_eq!(popularity.len(), 200);
            assert_eq!(truth["label"]["at_least"], LABEL_AT_LEAST);
            assert_eq!(truth["label"]["within_secs"], LABEL_WITHIN_SECS);
            assert_eq!(truth["config"]["seed"], 8);

            let mut follow_times: HashMap<&str, Vec<u64>> = HashMap::new();
            for (_, followee, time) in &world.follows {
                follow_times
                    .entry(followee.as_str())
                    .or_default()
                    .push(*time);
            }
            for post in &world.posts {
                let followers = follow_times.get(post.dog.as_str()).map_or(0, |times| {
                    times.iter().filter(|&&time| time < post.time).count()
                });
                let drawn_effect: f64 = post
                    .hashtags
                    .iter()
                    .map(|tag| number(&model["hashtag_effects"][tag.as_str()]))
                    .sum();
                let drifted = truth["drift"]["time"]
                    .as_u64()
                    .is_some_and(|drift_time| post.time >= drift_time);
                let hashtag_effect = if drifted { -drawn_effect } else { drawn_effect };
                let hour = ((post.time - START_TIME) % 86_400 / 3600) as usize;
                let log_rate = intercept
                    + popularity[post.dog.as_str()]
                    + hashtag_effect
                    + hour_effects[hour]
                    + follower_coefficient * (1.0 + followers as f64).ln();
                let expected = poisson_at_least(log_rate.exp(), LABEL_AT_LEAST);
                assert!(
                    (expected - post.truth_p).abs() <= 5.0e-7 + 1.0e-12,
                    "{}: truth.json gives {expected}, posts.csv {}",
                    post.id,
                    post.truth_p
                );
            }
        }
    }

    #[test]
    fn queries_probe_extremes_and_unknowns_after_every_fact() {
        let world = generate(&small_config(9));
        assert_eq!(world.queries.len(), 8);
        assert_eq!(world.report.queries, 8);
        let last_fact = [
            world.follows.iter().map(|follow| follow.2).max(),
            world.posts.iter().map(|post| post.time).max(),
            world.likes.iter().map(|like| like.2).max(),
        ]
        .into_iter()
        .flatten()
        .max()
        .unwrap();

        let mut by_popularity: Vec<(f64, String)> = world.truth["dogs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|dog| {
                (
                    dog["popularity"].as_f64().unwrap(),
                    dog["dog"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        by_popularity.sort_by(|left, right| left.0.total_cmp(&right.0));
        let count = by_popularity.len();
        let query_dog = |index: usize| world.queries[index]["dog"].as_str().unwrap();
        assert_eq!(query_dog(0), by_popularity[count - 1].1);
        assert_eq!(query_dog(1), by_popularity[count - 2].1);
        assert_eq!(query_dog(2), by_popularity[0].1);
        assert_eq!(query_dog(3), by_popularity[1].1);
        assert_eq!(query_dog(6), UNKNOWN_DOG);

        let known_tags = world.truth["model"]["hashtag_effects"].as_object().unwrap();
        let mut unseen = 0;
        for (index, query) in world.queries.iter().enumerate() {
            assert_eq!(query["id"], format!("q{}", index + 1));
            let time = query["time"].as_u64().unwrap();
            assert_eq!(time % 3600, 0);
            assert!(time > last_fact && time - 3600 <= last_fact);
            for tag in query["hashtags"].as_array().unwrap() {
                let tag = tag.as_str().unwrap();
                if tag == UNSEEN_HASHTAG {
                    unseen += 1;
                } else {
                    assert!(known_tags.contains_key(tag), "{tag}");
                }
            }
            let query_truth = &world.truth["queries"][index];
            assert_eq!(query_truth["id"], query["id"]);
            assert_eq!(
                query_truth["truth_p"].is_null(),
                query["dog"] == UNKNOWN_DOG
            );
        }
        assert_eq!(unseen, 1);
        assert!(!known_tags.contains_key(UNSEEN_HASHTAG));
        // the most popular dog is more likely popular than the least, with or without tags
        let query_p = |index: usize| world.truth["queries"][index]["truth_p"].as_f64().unwrap();
        assert!(query_p(1) > query_p(3));
    }

    #[test]
    fn a_drift_flips_the_hashtag_effects_from_its_day_on_and_changes_nothing_before() {
        let stationary = generate(&small_config(5));
        let drifted = generate(&SniffableConfig {
            drift_at_day: Some(3),
            ..small_config(5)
        });
        let drift_time = START_TIME + 3 * 86_400;
        assert_eq!(drifted.truth["drift"]["time"], drift_time);
        assert_eq!(drifted.truth["drift"]["day"], 3);
        assert!(stationary.truth["drift"].is_null());
        // posts are drawn before likes, from their own stream: the same posts either way
        assert_eq!(stationary.posts.len(), drifted.posts.len());
        let (mut before, mut after_changed, mut after_tagged) = (0, 0, 0);
        for (plain, changed) in stationary.posts.iter().zip(&drifted.posts) {
            assert_eq!((&plain.id, plain.time), (&changed.id, changed.time));
            if plain.time < drift_time {
                before += 1;
                assert_eq!(
                    plain.truth_p, changed.truth_p,
                    "{} before the drift",
                    plain.id
                );
            } else if !plain.hashtags.is_empty() {
                after_tagged += 1;
                if plain.truth_p != changed.truth_p {
                    after_changed += 1;
                }
            }
        }
        assert!(before > 0 && after_tagged > 0);
        // a tagged post's chance changes unless its tags' effects happen to sum to zero
        assert!(
            after_changed * 10 >= after_tagged * 9,
            "{after_changed} of {after_tagged} tagged posts after the drift changed"
        );
    }

    #[test]
    fn invalid_config_is_an_error_and_writes_nothing() {
        let directory = tempfile::tempdir().unwrap();
        let out_dir = directory.path().join("out");
        let invalid = [
            (
                SniffableConfig {
                    dogs: 0,
                    ..small_config(1)
                },
                "dogs is 0",
            ),
            (
                SniffableConfig {
                    dogs: 1,
                    ..small_config(1)
                },
                "dogs is 1",
            ),
            (
                SniffableConfig {
                    days: 0,
                    ..small_config(1)
                },
                "days is 0",
            ),
            (
                SniffableConfig {
                    drift_at_day: Some(5),
                    ..small_config(1)
                },
                "drift at day 5",
            ),
            (
                SniffableConfig {
                    drift_at_day: Some(0),
                    ..small_config(1)
                },
                "drift at day 0",
            ),
        ];
        for (config, message) in invalid {
            let error = generate_sniffable(&config, &out_dir).unwrap_err();
            assert!(error.to_string().contains(message), "{error}");
            assert!(!out_dir.exists());
        }
    }

    #[test]
    fn unwritable_output_names_the_path() {
        let directory = tempfile::tempdir().unwrap();
        let blocker = directory.path().join("a-file");
        fs::write(&blocker, b"not a directory").unwrap();
        let error = generate_sniffable(&small_config(1), &blocker.join("out")).unwrap_err();
        assert!(matches!(error, GenerateError::CreateDir { .. }), "{error}");
        assert!(error.to_string().contains("a-file"), "{error}");
    }

    #[test]
    fn a_two_dog_network_still_makes_sense() {
        let world = generate(&SniffableConfig {
            seed: 1,
            dogs: 2,
            days: 1,
            drift_at_day: None,
        });
        assert_eq!(world.follows.len(), 2);
        for (follower, followee, _) in &world.follows {
            assert_ne!(follower, followee);
        }
        let authors: HashMap<&str, &str> = world
            .posts
            .iter()
            .map(|post| (post.id.as_str(), post.dog.as_str()))
            .collect();
        for (post, liker, _) in &world.likes {
            assert_ne!(authors[post.as_str()], liker.as_str());
        }
        assert_eq!(world.queries.len(), 8);
    }

    #[test]
    fn an_existing_output_directory_is_overwritten_in_place() {
        let directory = tempfile::tempdir().unwrap();
        generate_sniffable(&small_config(1), directory.path()).unwrap();
        let report = generate_sniffable(&small_config(2), directory.path()).unwrap();
        let posts = fs::read_to_string(directory.path().join("posts.csv")).unwrap();
        assert_eq!(posts.lines().count(), report.posts + 1);
        assert_eq!(fs::read_dir(directory.path()).unwrap().count(), FILES.len());
    }

    #[test]
    fn poisson_tail_is_exact_at_both_ends() {
        // P(Poisson(5) >= 5) = 1 - e^-5 (1 + 5 + 25/2 + 125/6 + 625/24)
        let lower = (-5.0f64).exp() * (1.0 + 5.0 + 12.5 + 125.0 / 6.0 + 625.0 / 24.0);
        assert!((poisson_at_least(5.0, 5) - (1.0 - lower)).abs() < 1e-14);
        assert_eq!(poisson_at_least(0.3, 0), 1.0);
        // tiny rates: the tail is about λ^5 / 5!, which 1 - (lower tail) would round to 0
        let tiny = poisson_at_least(1e-3, 5);
        assert!((tiny / (1e-15 / 120.0) - 1.0).abs() < 1e-2, "{tiny}");
        // huge rates: certain, without overflow
        assert_eq!(poisson_at_least(1e4, 5), 1.0);
        // increasing in the rate
        let rates = [0.01, 0.5, 1.0, 2.0, 4.0, 4.99, 5.0, 5.01, 8.0, 20.0];
        assert!(rates.windows(2).all(|pair| {
            poisson_at_least(pair[0], LABEL_AT_LEAST) < poisson_at_least(pair[1], LABEL_AT_LEAST)
        }));
    }

    #[test]
    fn hashtag_names_are_distinct_plain_words() {
        let vocabulary = Vocabulary::draw(&mut phase_rng(1, Phase::Vocabulary));
        let names: HashSet<&String> = vocabulary.names.iter().collect();
        assert_eq!(names.len(), VOCABULARY_SIZE);
        let usage: f64 = vocabulary.usage.iter().sum();
        assert!((usage - 1.0).abs() < 1e-12);
        let mean_effect: f64 = vocabulary
            .effects
            .iter()
            .zip(&vocabulary.usage)
            .map(|(effect, share)| effect * share)
            .sum();
        assert!(mean_effect.abs() < 1e-12);
    }
}
