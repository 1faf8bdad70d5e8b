//! What the shape of the filter contract costs at the boundary: the same
//! decision (tool allowed by name, configuration parsed once) made by two
//! probe components (`bench/contract-probe`) that differ only in what
//! crosses the boundary per call. `full` takes the 0.2 contract's whole
//! call record and the configuration text with every call; `lean` is
//! configured once per instance and takes only the declared parts. Each
//! is measured warm and with the L2 evicted before the call, as in the
//! sidecar. Built with `bash bench/contract-probe/build.sh`; skipped when
//! the probes are missing.

#[path = "support/cold.rs"]
mod cold;

use std::{path::PathBuf, time::Duration};

use criterion::{criterion_group, criterion_main, Criterion};
use portcullis::filter::{EngineOptions, FilterEngine};
use wasmtime::{
    component::{Component, Linker},
    Store,
};

mod full {
    wasmtime::component::bindgen!({ path: "../bench/contract-probe/wit/full", world: "probe" });
}

/// The current contract (0.3: configured once, undeclared parts `none`),
/// for tool-rbac called without the sidecar's host around it (no chain, no
/// warm pool, no deadline, no metrics).
mod real {
    wasmtime::component::bindgen!({ path: "../policy-sdk/wit", world: "filter" });
}

mod lean {
    wasmtime::component::bindgen!({ path: "../bench/contract-probe/wit/lean", world: "probe" });
}

/// The 0.2 call the host built for a filter that declares method and
/// target (tool-rbac without principals), in `$m`'s copy of the types.
macro_rules! tool_call {
    ($($m:ident)::+) => {
        $($m)::+::Call {
            kind: $($m)::+::MessageKind::Request,
            method: "tools/call".into(),
            id: None,
            target: Some($($m)::+::Target {
                kind: $($m)::+::TargetKind::Tool,
                name: "echo".into(),
            }),
            arguments: None,
            principal: $($m)::+::Principal {
                peer: None,
                token: None,
                key: String::new(),
            },
            session: None,
            instance: String::new(),
            era: String::new(),
            headers: Vec::new(),
            annotations: None,
        }
    };
}

const CONFIG: &str = r#"{"allow":["echo","search","fetch"]}"#;
fn probe(name: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("CONTRACT_PROBES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("../target/contract-probe/wasm32-wasip2/release"));
    let path = dir.join(format!("probe_{name}.wasm"));
    path.is_file().then_some(path)
}

fn bench(c: &mut Criterion) {
    let (Some(full_path), Some(lean_path)) = (probe("full"), probe("lean")) else {
        eprintln!("contract probes not built (bash bench/contract-probe/build.sh): skipped");
        return;
    };
    let engine = FilterEngine::new(&EngineOptions {
        cache_dir: None,
        max_instances: 64,
        max_memory: 32 << 20,
    })
    .unwrap();
    let engine = engine.engine();

    let load = |path: &PathBuf| {
        let component = Component::from_file(engine, path).unwrap();
        let mut linker: Linker<()> = Linker::new(engine);
        linker.define_unknown_imports_as_traps(&component).unwrap();
        let mut store = Store::new(engine, ());
        store.set_epoch_deadline(1 << 40);
        (component, linker, store)
    };

    let (component, linker, mut full_store) = load(&full_path);
    let full = full::Probe::instantiate(&mut full_store, &component, &linker).unwrap();
    // What the host builds for tool-rbac, which declares method and target.
    let call = tool_call!(full::portcullis::probe_full::types);
    let mut full_call = move || {
        let d = full
            .call_on_request(&mut full_store, CONFIG, &call)
            .unwrap();
        assert!(matches!(
            d,
            full::portcullis::probe_full::types::Decision::Allow
        ));
    };

    let (component, linker, mut lean_store) = load(&lean_path);
    let lean = lean::Probe::instantiate(&mut lean_store, &component, &linker).unwrap();
    lean.call_configure(&mut lean_store, CONFIG)
        .unwrap()
        .unwrap();
    let lean_args = lean::portcullis::probe_lean::types::Call {
        method: "tools/call".into(),
        tool: Some("echo".into()),
        arguments: None,
    };
    let mut lean_call = move || {
        let d = lean.call_on_request(&mut lean_store, &lean_args).unwrap();
        assert!(matches!(
            d,
            lean::portcullis::probe_lean::types::Decision::Allow
        ));
    };

    let rbac_path = std::env::var_os("PORTCULLIS_PREBUILT_FILTERS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("../target/wasm32-wasip2/release"))
        .join("tool_rbac.wasm");
    if !rbac_path.exists() {
        eprintln!("{} not built (make filters): skipped", rbac_path.display());
        return;
    }
    let (component, linker, mut rbac_store) = load(&rbac_path);
    let rbac = real::Filter::instantiate(&mut rbac_store, &component, &linker).unwrap();
    let rbac_config =
        r#"{"default":"deny","rules":[{"name":"anyone-echo","effect":"allow","tools":["echo"]}]}"#;
    rbac.call_configure(&mut rbac_store, rbac_config)
        .unwrap()
        .unwrap();
    // What the host shows a filter that declares method and target.
    use real::portcullis::policy::types as t;
    let rbac_args = t::Call {
        kind: t::MessageKind::Request,
        method: "tools/call".into(),
        id: None,
        target: Some(t::Target {
            kind: t::TargetKind::Tool,
            name: "echo".into(),
        }),
        arguments: None,
        principal: None,
        session: None,
        instance: None,
        era: None,
        headers: None,
        annotations: None,
    };
    let mut rbac_call = move || {
        let d = rbac.call_on_request(&mut rbac_store, &rbac_args).unwrap();
        assert!(
            matches!(d, real::portcullis::policy::types::Decision::Allow),
            "{d:?}"
        );
    };

    let mut junk = vec![1u8; cold::EVICT];
    let mut g = c.benchmark_group("contract");
    g.bench_function("full_call_record_and_config", |b| b.iter(&mut full_call));
    g.bench_function("lean_declared_parts_only", |b| b.iter(&mut lean_call));
    g.bench_function("full_call_record_and_config_cold_caches", |b| {
        cold::cold(b, &mut junk, &mut full_call)
    });
    g.bench_function("lean_declared_parts_only_cold_caches", |b| {
        cold::cold(b, &mut junk, &mut lean_call)
    });
    g.bench_function("tool_rbac_direct", |b| b.iter(&mut rbac_call));
    g.bench_function("tool_rbac_direct_cold_caches", |b| {
        cold::cold(b, &mut junk, &mut rbac_call)
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(4)).warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
