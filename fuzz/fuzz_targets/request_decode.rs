//! One request frame, without framing, under the default limits and under
//! tight ones (a batch limit of 2).
#![no_main]

mod common;

use kms_proto::DecodeLimits;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    common::check_request(data, &common::limits());
    common::check_request(
        data,
        &DecodeLimits {
            max_frame: common::MAX_FRAME,
            max_batch: 2,
        },
    );
});
