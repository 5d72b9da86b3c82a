//! Bounds of an answer frame, from the request alone, before anything
//! runs: the byte budgets charge them, and a batch whose answer could
//! exceed the largest answer frame runs only the items that fit.
//!
//! Bounds follow `kms_proto::codec::response_size_hint`
//! (an upper bound of the encoded size, which sizes the builder): a frame
//! costs 128 bytes and its length prefix, an outcome 256 bytes of tables and
//! padding, a batch entry 8, plus the variable parts, bounded here from the
//! request alone so that they are known before any work is done.

use crate::service::op;
use kms_proto::{KmsError, Operation, Request, RequestBody};

/// A frame's fixed part.
const FRAME_FIXED: usize = 128 + kms_proto::frame::LEN_PREFIX;
/// An outcome's fixed part, batch entry and exception name included.
const OUTCOME_FIXED: usize = 256 + 8 + 40;
/// Longest error message kmsd writes that holds no client text of
/// unbounded length: the longest quotes a key identifier of at most 128
/// characters Debug-escaped (at most 10 bytes each).
const ERROR_TEXT_MAX: usize = 1536;
/// A ListKeys entry beyond its two strings (`response_size_hint`).
const LIST_ENTRY_FIXED: usize = 64;
/// The answer to an item that does not fit the answer frame.
const TOO_LARGE_BOUND: usize = OUTCOME_FIXED + 256;
/// Tables of a frame, and of an outcome beyond the entries of a ListKeys
/// page (outcome, output, metadata or error), as the response verifier
/// counts them.
const FRAME_TABLES: usize = 4;
const OUTCOME_TABLES: usize = 4;
/// Most tables in an answer: more and kms-proto clients refuse it.
const MAX_TABLES: usize = kms_proto::codec::MAX_RESPONSE_TABLES;

/// Which items of a request run, and the bound of its whole answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AnswerPlan {
    /// Items from the start that run (0 or 1 for a single request); the
    /// rest are answered [`answer_too_large`].
    pub runs: usize,
    /// Upper bound of the encoded answer frame, length prefix included.
    pub bound: usize,
}

/// Tables one outcome adds to an answer, from its request.
fn outcome_tables(op: &Result<Operation<'_>, KmsError>) -> usize {
    OUTCOME_TABLES + op.as_ref().map_or(0, |op| op::output_size(op).entries)
}

/// Upper bound of the bytes one outcome adds to an answer, from its
/// request: the larger of its success and its longest error.
pub fn outcome_bound(op: &Result<Operation<'_>, KmsError>) -> usize {
    let op = match op {
        Ok(op) => op,
        Err(e) => return OUTCOME_FIXED + e.message.len(),
    };
    let size = op::output_size(op);
    let success = size.success + size.entries * LIST_ENTRY_FIXED;
    OUTCOME_FIXED + success.max(ERROR_TEXT_MAX + size.error_text)
}

/// Which items of `request` run under an answer frame of at most
/// `max_answer` bytes and `kms_proto::codec::MAX_RESPONSE_TABLES` tables
/// (what clients accept), and the bound of the answer. Items run in order up to the first one whose
/// outcome, with the over-size errors of every item after it, would not
/// fit; it and the rest are answered [`answer_too_large`]. One pass over
/// the decoded items, no allocation.
pub fn answer_plan(request: &Request<'_>, max_answer: usize) -> AnswerPlan {
    match &request.body {
        RequestBody::Single(op) => {
            let bound = FRAME_FIXED + outcome_bound(op);
            if bound <= max_answer && FRAME_TABLES + outcome_tables(op) <= MAX_TABLES {
                AnswerPlan { runs: 1, bound }
            } else {
                AnswerPlan {
                    runs: 0,
                    bound: FRAME_FIXED + TOO_LARGE_BOUND,
                }
            }
        }
        RequestBody::Batch(items) => {
            let n = items.len();
            let mut bound = FRAME_FIXED;
            let mut tables = FRAME_TABLES;
            for (i, op) in items.iter().enumerate() {
                let b = outcome_bound(op);
                let t = outcome_tables(op);
                let rest = n - i - 1;
                if bound + b + rest * TOO_LARGE_BOUND > max_answer
                    || tables + t + rest * OUTCOME_TABLES > MAX_TABLES
                {
                    return AnswerPlan {
                        runs: i,
                        bound: bound + (n - i) * TOO_LARGE_BOUND,
                    };
                }
                bound += b;
                tables += t;
            }
            AnswerPlan { runs: n, bound }
        }
    }
}

/// The error of an item whose answer would not fit the answer frame.
/// ValidationException rather than LimitExceededException: the request as
/// sent can never succeed (a retry of it fails the same way), and SDK
/// retry modes retry LimitExceededException as throttling; the client must
/// send the item again in another frame.
pub fn answer_too_large(max_answer: usize) -> KmsError {
    crate::errors::answer_too_large(max_answer, MAX_TABLES)
}
