//! The limits a frame is verified with before any field is read, in both
//! directions: requests by the daemon ([`DecodeLimits`]), responses by the
//! clients. Kept apart from the conversions so that the bounds, and why
//! they are what they are, are read in one place.

use crate::frame::DEFAULT_MAX_FRAME;
use crate::types::limits;
use flatbuffers::VerifierOptions;

/// Default largest batch, in items.
pub const DEFAULT_MAX_BATCH: usize = 1024;

/// Limits applied while decoding a request.
#[derive(Debug, Clone, Copy)]
pub struct DecodeLimits {
    /// Largest frame in bytes (also the verifier's apparent-size bound).
    pub max_frame: usize,
    /// Largest batch in items.
    pub max_batch: usize,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            max_frame: DEFAULT_MAX_FRAME,
            max_batch: DEFAULT_MAX_BATCH,
        }
    }
}

impl DecodeLimits {
    /// Verifier limits derived from the protocol's shape: the deepest valid
    /// request is Request > BatchItem > CreateGrant > GrantConstraints >
    /// ContextEntry (5 tables), and a valid request has at most one table
    /// for the request, two per item and one per context entry (two
    /// contexts for ReEncrypt), tag (at most 50, fewer than two contexts'
    /// 128) or grant constraint (the constraints table and at most 16
    /// pairs).
    pub fn verifier_options(&self) -> VerifierOptions {
        VerifierOptions {
            max_depth: 8,
            max_tables: 1 + self.max_batch.max(1) * (2 + 2 * limits::MAX_CONTEXT_ENTRIES),
            max_apparent_size: self.max_frame,
            ignore_missing_null_terminator: false,
        }
    }
}

/// Most tables in a response a client accepts: 4 for the frame, 4 per
/// batch item (outcome, output, metadata or error), and one full page of
/// ListKeys, ListAliases or ListKeyRotations (1000 entries; ListResourceTags
/// pages hold at most 50). A full page of ListGrants or ListRetirableGrants
/// (100 grants of up to 18 tables: the entry, its constraints and 16
/// pairs) fits alone or with fewer other items. The daemon plans its
/// answers within it (`kmsd::service::answer_plan`).
pub const MAX_RESPONSE_TABLES: usize = 4 + DEFAULT_MAX_BATCH * 4 + limits::MAX_LIST_LIMIT as usize;

/// Verifier limits for responses. A client trusts its daemon less than
/// blindly: responses are verified like requests, with room for the largest
/// batch of the largest outputs.
pub(super) fn response_verifier_options(max_frame: usize) -> VerifierOptions {
    VerifierOptions {
        max_depth: 8,
        max_tables: MAX_RESPONSE_TABLES,
        max_apparent_size: max_frame,
        ignore_missing_null_terminator: false,
    }
}
