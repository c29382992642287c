//! Validation throughput: parse, decode and validate a generated configuration of 10,000 mixed
//! resources (goal: well under one second on a 2-core machine).

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

mod support {
    pub mod generate;
}

fn validate_10k(c: &mut Criterion) {
    let config = support::generate::mixed_config(10_000);
    let mut group = c.benchmark_group("validate");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(config.len() as u64));
    group.bench_function("10k_mixed_resources", |b| {
        b.iter(|| {
            let checked = weir_api::check_text(black_box(&config), "default");
            assert_eq!(checked.len(), 10_000);
            assert!(checked.iter().all(|c| c.verdict == weir_api::Verdict::Valid));
            checked
        })
    });
    group.bench_function("parse_only_10k", |b| {
        b.iter(|| weir_api::yaml::parse_documents(black_box(&config)))
    });
    group.finish();
}

criterion_group!(benches, validate_10k);
criterion_main!(benches);
