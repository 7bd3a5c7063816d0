//! Learning: the logistic model and its optimizers, the operator that trains it across
//! workers, the merge of the workers' replicas at each round, its progressive validation, and
//! the exact regression with its operator, the drift detectors that watch a loss stream, and
//! the side-by-side comparison of variants.
pub mod adagrad;
pub mod compare;
pub mod drift;
pub mod evaluate;
pub mod exact;
pub mod ftrl;
pub mod logistic;
pub mod merge;
pub mod optimizer;
pub mod ridge;
pub mod sgd;
pub mod train;
