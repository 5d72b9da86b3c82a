//! The registry: what the data path's calls record, read back through the
//! recorder's own rendering.

use super::*;
use kms_proto::{KmsError, Operation, WhoAmI};

fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn items_are_counted_per_operation_and_failures_per_exception() {
    let m = Metrics::new();
    let gr = |n| {
        Ok(Operation::GenerateRandom(kms_proto::GenerateRandom {
            number_of_bytes: n,
        }))
    };
    let items = vec![
        gr(1),
        gr(2),
        Ok(Operation::WhoAmI(WhoAmI)),
        gr(3),
        Err(KmsError::validation("unknown operation")),
    ];
    count_items(&m, &items, |i| match i {
        1 => Some(ErrorKind::Validation),
        3 => Some(ErrorKind::AccessDenied),
        4 => Some(ErrorKind::Validation),
        _ => None,
    });
    let t = m.render();
    let req = |op: &str| value(&t, &format!("kmsd_requests_total{{operation=\"{op}\"}}"));
    assert_eq!(req("GenerateRandom"), Some(3.0), "{t}");
    assert_eq!(req("WhoAmI"), Some(1.0));
    assert_eq!(req("Frame"), Some(1.0));
    assert_eq!(req("Encrypt"), Some(0.0), "registered up front");
    let err = |op: &str, e: &str| {
        value(
            &t,
            &format!("kmsd_errors_total{{operation=\"{op}\",exception=\"{e}\"}}"),
        )
    };
    assert_eq!(err("GenerateRandom", "ValidationException"), Some(1.0));
    assert_eq!(err("GenerateRandom", "AccessDeniedException"), Some(1.0));
    assert_eq!(err("Frame", "ValidationException"), Some(1.0));
    assert_eq!(err("WhoAmI", "ValidationException"), None, "only what happened");
}

#[test]
fn every_operation_index_names_its_operation_and_error_kinds_are_dense() {
    assert_eq!(
        Operation::WhoAmI(WhoAmI).index(),
        Operation::NAMES.iter().position(|n| *n == "WhoAmI").unwrap()
    );
    let mut names = Operation::NAMES.to_vec();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), Operation::NAMES.len());
    for (i, k) in ErrorKind::ALL.iter().enumerate() {
        assert_eq!(kind_index(*k), i);
    }
    assert_eq!(kind_index(ErrorKind::Unrecognized), KINDS - 1);
}

#[test]
fn latencies_are_histograms_with_a_maximum() {
    let m = Metrics::new();
    for us in 1..=1000u64 {
        m.latency(3, std::time::Duration::from_micros(us));
    }
    m.latency(MIXED_INDEX, std::time::Duration::from_millis(2));
    m.upkeep();
    let t = m.render();
    let op = Operation::NAMES[3];
    assert!(
        t.contains("# TYPE kmsd_request_duration_seconds histogram"),
        "{t}"
    );
    let series = |s: &str| value(&t, s).unwrap_or_else(|| panic!("{s}:\n{t}"));
    assert_eq!(
        series(&format!("kmsd_request_duration_seconds_count{{operation=\"{op}\"}}")),
        1000.0
    );
    // 2^-12 s = 244 us: 244 samples of 1..=1000 us are at most that.
    assert_eq!(
        series(&format!(
            "kmsd_request_duration_seconds_bucket{{operation=\"{op}\",le=\"0.000256\"}}"
        )),
        256.0
    );
    assert_eq!(
        series(&format!("kmsd_request_duration_max_seconds{{operation=\"{op}\"}}")),
        0.001
    );
    assert_eq!(
        series("kmsd_request_duration_max_seconds{operation=\"Mixed\"}"),
        0.002
    );
}

#[test]
fn frame_ops_label_uniform_batches_by_their_operation() {
    use kms_proto::RequestBody;
    let who = || Ok(Operation::WhoAmI(WhoAmI));
    let gr = || {
        Ok(Operation::GenerateRandom(kms_proto::GenerateRandom {
            number_of_bytes: 1,
        }))
    };
    let idx = Operation::WhoAmI(WhoAmI).index();
    assert_eq!(frame_op(&RequestBody::Single(who())), idx);
    assert_eq!(frame_op(&RequestBody::Batch(vec![who(), who()])), idx);
    assert_eq!(frame_op(&RequestBody::Batch(vec![who(), gr()])), MIXED_INDEX);
    assert_eq!(frame_op(&RequestBody::Batch(vec![])), FRAME_INDEX);
}

#[test]
fn samplers_and_uptime_are_read_at_render_and_others_macros_show() {
    let m = Metrics::new();
    m.add_sampler(Box::new(|m| {
        m.gauge(names::QUEUE_DEPTH, &[("queue", "workers_small")]).set(7.0);
    }));
    m.connection(Ok(()));
    m.connection(Ok(()));
    m.connection_closed();
    m.connection(Err(true));
    m.cache_lookup(true);
    m.cache_lookup(true);
    m.cache_lookup(false);
    m.loader_batch(5);
    // Another module's macro, through this recorder.
    metrics::with_local_recorder(&m.recorder, || {
        metrics::counter!("kmsd_throttled_total", "principal" => "uid:1000", "class" => "cryptographic")
            .increment(4);
    });
    let t = m.render();
    assert_eq!(value(&t, "kmsd_queue_depth{queue=\"workers_small\"}"), Some(7.0));
    assert_eq!(value(&t, "kmsd_connections_open"), Some(1.0));
    assert_eq!(value(&t, "kmsd_connections_accepted_total"), Some(2.0));
    assert_eq!(
        value(&t, "kmsd_connections_refused_total{reason=\"max_connections_per_uid\"}"),
        Some(1.0)
    );
    assert_eq!(value(&t, "kmsd_key_cache_hits_total"), Some(2.0));
    assert_eq!(value(&t, "kmsd_key_cache_misses_total"), Some(1.0));
    assert_eq!(value(&t, "kmsd_key_loader_batches_total"), Some(1.0));
    assert_eq!(
        value(
            &t,
            "kmsd_throttled_total{principal=\"uid:1000\",class=\"cryptographic\"}"
        ),
        Some(4.0)
    );
    assert!(value(&t, "kmsd_uptime_seconds").is_some());
    assert_eq!(
        value(
            &t,
            &format!("kmsd_build_info{{version=\"{}\"}}", env!("CARGO_PKG_VERSION"))
        ),
        Some(1.0)
    );
}
