//! Reading an upstream answer on the way back: every answer is validated
//! and classified (to route it and track its id), and a list is filtered.
//! A `tools/call` result holds no list; a `tools/list` of ten tools hides
//! one. Strict validation alone is the baseline measured in the same run.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use portcullis::mcp::{json, lists::filter_answer};

fn bench(c: &mut Criterion) {
    let call = br#"{"jsonrpc":"2.0","id":7,"result":{"content":[{"type":"text","text":"the quick brown fox jumps over the lazy dog, twice over"}],"isError":false}}"#;
    let tools: Vec<String> = (0..10)
        .map(|i| format!(r#"{{"name":"tool{i}","description":"does thing {i}","inputSchema":{{"type":"object","properties":{{"x":{{"type":"string"}}}}}}}}"#))
        .collect();
    let list = format!(
        r#"{{"jsonrpc":"2.0","id":8,"result":{{"tools":[{}]}}}}"#,
        tools.join(",")
    );
    let mut g = c.benchmark_group("answer");
    g.measurement_time(Duration::from_secs(3));
    g.bench_function("baseline: validate a tools/call answer", |b| {
        b.iter(|| json::validate_answer(call, 64).unwrap())
    });
    g.bench_function("tools/call answer", |b| {
        b.iter(|| filter_answer(call, 64, |_, items| vec![true; items.len()]).unwrap())
    });
    g.bench_function("tools/list answer, ten tools, one hidden", |b| {
        b.iter(|| {
            filter_answer(list.as_bytes(), 64, |_, items| {
                items.iter().map(|i| i.name != "tool3").collect()
            })
            .unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
