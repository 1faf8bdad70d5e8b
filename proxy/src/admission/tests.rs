use super::*;

fn limits(n: usize) -> Limits {
    Limits {
        max_connections: n,
        max_connections_per_caller: n,
        max_inflight: n,
        max_inflight_per_caller: n,
        max_streams_per_caller: n,
    }
}

fn gate(l: Limits) -> Arc<Gate> {
    let registry = Registry::new();
    Arc::new(Gate::new(
        "proxy",
        l,
        Some(AdmissionMetrics::register(&registry).unwrap()),
    ))
}

fn refused(g: &Gate, limit: Limit) -> u64 {
    g.metrics
        .as_ref()
        .unwrap()
        .refused
        .with_label_values(&["proxy", limit.label()])
        .get()
}

#[test]
fn connections_beyond_the_limit_are_shed_then_reset() {
    let g = gate(Limits {
        max_connections: 2,
        ..limits(100)
    });
    let a = g.accept().unwrap();
    let b = g.accept().unwrap();
    assert!(a.shed().is_none() && b.shed().is_none());
    let mut shed = Vec::new();
    for _ in 0..MAX_SHED {
        let e = g.accept().unwrap();
        assert_eq!(e.shed(), Some(Limit::Connections));
        shed.push(e);
    }
    assert_eq!(g.accept().err(), Some(Limit::Shed));
    assert_eq!(refused(&g, Limit::Connections), MAX_SHED as u64 + 1);
    assert_eq!(refused(&g, Limit::Shed), 1);
    // A place given back is a place for the next connection.
    drop(a);
    assert!(g.accept().unwrap().shed().is_none());
    drop(shed);
    assert_eq!(g.shed.load(Ordering::Acquire), 0);
}

#[test]
fn a_caller_over_its_connection_limit_is_shed_and_frees_its_listener_place() {
    let g = gate(Limits {
        max_connections_per_caller: 1,
        ..limits(10)
    });
    let alice: Arc<str> = Arc::from("spiffe://td/a");
    let first = g.caller(g.accept().unwrap(), alice.clone()).unwrap();
    assert!(first.shed().is_none());
    let second = g.caller(g.accept().unwrap(), alice.clone()).unwrap();
    assert_eq!(second.shed(), Some(Limit::ConnectionsPerCaller));
    assert_eq!(
        g.open_connections(),
        1,
        "the shed connection holds no listener place"
    );
    // Another caller is not affected.
    let bob = g
        .caller(g.accept().unwrap(), Arc::from("spiffe://td/b"))
        .unwrap();
    assert!(bob.shed().is_none());
    drop((first, second, bob));
    assert_eq!(g.open_connections(), 0);
    assert_eq!(g.callers_held(), 0, "no caller entry outlives its places");
}

#[test]
fn requests_in_flight_are_bounded_per_listener_and_per_caller() {
    let g = gate(Limits {
        max_inflight: 3,
        max_inflight_per_caller: 2,
        ..limits(10)
    });
    let a: Arc<str> = Arc::from("a");
    let b: Arc<str> = Arc::from("b");
    let a1 = g.request(&a).unwrap();
    let _a2 = g.request(&a).unwrap();
    assert_eq!(g.request(&a).err(), Some(Limit::InflightPerCaller));
    let _b1 = g.request(&b).unwrap();
    assert_eq!(g.request(&b).err(), Some(Limit::Inflight));
    assert_eq!(
        g.inflight.load(Ordering::Acquire),
        3,
        "a refused request holds nothing"
    );
    drop(a1);
    assert!(g.request(&b).is_ok());
    assert_eq!(refused(&g, Limit::Inflight), 1);
    assert_eq!(refused(&g, Limit::InflightPerCaller), 1);
}

#[test]
fn streams_are_bounded_per_caller() {
    let g = gate(Limits {
        max_streams_per_caller: 1,
        ..limits(10)
    });
    let a: Arc<str> = Arc::from("a");
    let s = g.stream(&a).unwrap();
    assert_eq!(g.stream(&a).err(), Some(Limit::StreamsPerCaller));
    assert!(g.stream(&Arc::from("b")).is_ok());
    drop(s);
    assert!(g.stream(&a).is_ok());
    assert_eq!(g.callers_held(), 0);
}

#[test]
fn a_shed_connection_refuses_every_request() {
    let admitted = Admitted {
        shed: Some(Limit::Connections),
        ..Admitted::unlimited()
    };
    assert_eq!(admitted.request().err(), Some(Limit::Connections));
}

#[test]
fn anonymous_callers_are_counted_by_address() {
    let p = Principal::default();
    let one = caller_key(&p, "10.0.0.1:5000".parse().unwrap());
    let two = caller_key(&p, "10.0.0.2:5000".parse().unwrap());
    let same = caller_key(&p, "10.0.0.1:6000".parse().unwrap());
    assert_ne!(one, two);
    assert_eq!(one, same, "the port does not make a new caller");
}
