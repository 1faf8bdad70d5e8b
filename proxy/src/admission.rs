//! Load admission: how many connections, requests in flight and event
//! streams a listener takes on, in all and per caller.
//!
//! Each listener has one [`Gate`]. A connection takes a place at the gate
//! when it is accepted (before the handshake, so a flood costs no TLS
//! work), and a place for its caller once the handshake says who that is.
//! Every request then takes an in-flight place, and every `GET` (an event
//! stream) a stream place, both held until the response body ends.
//!
//! Beyond a limit the answer is `503` with `Retry-After` (the service's
//! rescue point writes it), never a silent hang. A connection over a
//! connection limit is served in *shed* mode: each of its requests gets
//! that `503`, and it is closed after the first. Shed connections are
//! themselves bounded ([`MAX_SHED`]); past that, a new connection is reset
//! at once. Places are released by dropping a [`Permit`], so no path can
//! leak one.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex, PoisonError,
    },
};

use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};

use crate::{config::ListenerConfig, identity::Principal};

/// Connections over a connection limit that are still being answered
/// `503`. Past this, new connections are reset without a handshake: a
/// flood must not buy TLS work or memory with refusals.
pub const MAX_SHED: usize = 256;

/// The limits of one listener, from its configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_connections: usize,
    pub max_connections_per_caller: usize,
    pub max_inflight: usize,
    pub max_inflight_per_caller: usize,
    pub max_streams_per_caller: usize,
}

impl Limits {
    pub fn from_config(c: &ListenerConfig) -> Self {
        Self {
            max_connections: c.max_connections,
            max_connections_per_caller: c.max_connections_per_caller,
            max_inflight: c.max_inflight,
            max_inflight_per_caller: c.max_inflight_per_caller,
            max_streams_per_caller: c.max_streams_per_caller,
        }
    }
}

/// The limit a connection or request ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Limit {
    Connections,
    ConnectionsPerCaller,
    Inflight,
    InflightPerCaller,
    StreamsPerCaller,
    /// Over a connection limit with no shed place left: reset.
    Shed,
}

impl Limit {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Connections => "connections",
            Self::ConnectionsPerCaller => "connections_per_caller",
            Self::Inflight => "inflight",
            Self::InflightPerCaller => "inflight_per_caller",
            Self::StreamsPerCaller => "streams_per_caller",
            Self::Shed => "shed",
        }
    }

    /// What the client is told, in the JSON-RPC error's message.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Connections | Self::Shed => "too many connections to this listener",
            Self::ConnectionsPerCaller => "too many connections from this caller",
            Self::Inflight => "too many requests in flight on this listener",
            Self::InflightPerCaller => "too many requests in flight from this caller",
            Self::StreamsPerCaller => "too many open event streams from this caller",
        }
    }
}

/// The admission metrics of every listener.
#[derive(Clone)]
pub struct AdmissionMetrics {
    open: IntGaugeVec,
    inflight: IntGaugeVec,
    refused: IntCounterVec,
}

impl AdmissionMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let open = IntGaugeVec::new(
            Opts::new(
                "listener_connections_open",
                "Connections admitted, by listener",
            ),
            &["listener"],
        )?;
        let inflight = IntGaugeVec::new(
            Opts::new(
                "listener_requests_inflight",
                "Requests admitted and not finished (streams included), by listener",
            ),
            &["listener"],
        )?;
        let refused = IntCounterVec::new(
            Opts::new(
                "overload_refused_total",
                "Connections and requests refused at a limit, by listener and limit",
            ),
            &["listener", "limit"],
        )?;
        registry.register(Box::new(open.clone()))?;
        registry.register(Box::new(inflight.clone()))?;
        registry.register(Box::new(refused.clone()))?;
        Ok(Self {
            open,
            inflight,
            refused,
        })
    }
}

/// What one caller holds at a gate.
#[derive(Debug, Default, Clone, Copy)]
struct Held {
    connections: usize,
    inflight: usize,
    streams: usize,
}

impl Held {
    fn slot(&mut self, kind: Kind) -> &mut usize {
        match kind {
            Kind::Connection => &mut self.connections,
            Kind::Request => &mut self.inflight,
            Kind::Stream => &mut self.streams,
        }
    }

    fn is_empty(&self) -> bool {
        self.connections == 0 && self.inflight == 0 && self.streams == 0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Connection,
    Request,
    Stream,
}

/// One listener's admission state.
pub struct Gate {
    listener: &'static str,
    limits: Limits,
    connections: AtomicUsize,
    inflight: AtomicUsize,
    shed: AtomicUsize,
    /// Callers with something held; an entry goes when its counts reach
    /// zero, so the map is bounded by what is open.
    callers: Mutex<HashMap<Arc<str>, Held>>,
    metrics: Option<AdmissionMetrics>,
}

impl Gate {
    pub fn new(listener: &'static str, limits: Limits, metrics: Option<AdmissionMetrics>) -> Self {
        Self {
            listener,
            limits,
            connections: AtomicUsize::new(0),
            inflight: AtomicUsize::new(0),
            shed: AtomicUsize::new(0),
            callers: Mutex::default(),
            metrics,
        }
    }

    pub fn listener(&self) -> &'static str {
        self.listener
    }

    /// A place for a newly accepted connection, or a shed place when the
    /// listener is full, or `Err(Limit::Shed)`: reset it.
    pub fn accept(self: &Arc<Self>) -> Result<Entry, Limit> {
        if take(&self.connections, self.limits.max_connections) {
            self.gauge_open(1);
            return Ok(Entry::Admitted(Permit::new(self, Slot::Connection)));
        }
        self.refused(Limit::Connections);
        self.shed_place(Limit::Connections)
    }

    /// After the handshake: a place for the caller's connection. A
    /// connection already shed keeps its shed place.
    pub fn caller(self: &Arc<Self>, entry: Entry, caller: Arc<str>) -> Result<Entry, Limit> {
        let Entry::Admitted(listener_place) = entry else {
            return Ok(entry);
        };
        match self.hold(
            &caller,
            Kind::Connection,
            self.limits.max_connections_per_caller,
        ) {
            true => Ok(Entry::Caller {
                _listener: listener_place,
                _caller: Permit::new(self, Slot::Caller(caller, Kind::Connection)),
            }),
            false => {
                drop(listener_place);
                self.refused(Limit::ConnectionsPerCaller);
                self.shed_place(Limit::ConnectionsPerCaller)
            }
        }
    }

    fn shed_place(self: &Arc<Self>, limit: Limit) -> Result<Entry, Limit> {
        if take(&self.shed, MAX_SHED) {
            return Ok(Entry::Shed(limit, Permit::new(self, Slot::Shed)));
        }
        self.refused(Limit::Shed);
        Err(Limit::Shed)
    }

    /// A place for one request from `caller`, held until its response
    /// body ends.
    pub fn request(self: &Arc<Self>, caller: &Arc<str>) -> Result<Permit, Limit> {
        if !take(&self.inflight, self.limits.max_inflight) {
            self.refused(Limit::Inflight);
            return Err(Limit::Inflight);
        }
        let listener_place = Permit::new(self, Slot::Inflight);
        self.gauge_inflight(1);
        if !self.hold(caller, Kind::Request, self.limits.max_inflight_per_caller) {
            drop(listener_place);
            self.refused(Limit::InflightPerCaller);
            return Err(Limit::InflightPerCaller);
        }
        Ok(Permit::pair(
            listener_place,
            Permit::new(self, Slot::Caller(caller.clone(), Kind::Request)),
        ))
    }

    /// A place for one event stream (a `GET`) from `caller`.
    pub fn stream(self: &Arc<Self>, caller: &Arc<str>) -> Result<Permit, Limit> {
        if !self.hold(caller, Kind::Stream, self.limits.max_streams_per_caller) {
            self.refused(Limit::StreamsPerCaller);
            return Err(Limit::StreamsPerCaller);
        }
        Ok(Permit::new(
            self,
            Slot::Caller(caller.clone(), Kind::Stream),
        ))
    }

    /// Connections admitted now (shed ones not counted).
    pub fn open_connections(&self) -> usize {
        self.connections.load(Ordering::Acquire)
    }

    fn hold(&self, caller: &Arc<str>, kind: Kind, max: usize) -> bool {
        let mut callers = self.callers.lock().unwrap_or_else(PoisonError::into_inner);
        let held = callers.entry(caller.clone()).or_default();
        let slot = held.slot(kind);
        if *slot >= max {
            if held.is_empty() {
                callers.remove(caller);
            }
            return false;
        }
        *slot += 1;
        true
    }

    fn release(&self, slot: &Slot) {
        match slot {
            Slot::Connection => {
                self.connections.fetch_sub(1, Ordering::AcqRel);
                self.gauge_open(-1);
            }
            Slot::Inflight => {
                self.inflight.fetch_sub(1, Ordering::AcqRel);
                self.gauge_inflight(-1);
            }
            Slot::Shed => {
                self.shed.fetch_sub(1, Ordering::AcqRel);
            }
            Slot::Caller(caller, kind) => {
                let mut callers = self.callers.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(held) = callers.get_mut(caller) {
                    let n = held.slot(*kind);
                    *n = n.saturating_sub(1);
                    if held.is_empty() {
                        callers.remove(caller);
                    }
                }
            }
        }
    }

    fn refused(&self, limit: Limit) {
        if let Some(m) = &self.metrics {
            m.refused
                .with_label_values(&[self.listener, limit.label()])
                .inc();
        }
    }

    fn gauge_open(&self, delta: i64) {
        if let Some(m) = &self.metrics {
            m.open.with_label_values(&[self.listener]).add(delta);
        }
    }

    fn gauge_inflight(&self, delta: i64) {
        if let Some(m) = &self.metrics {
            m.inflight.with_label_values(&[self.listener]).add(delta);
        }
    }

    #[cfg(test)]
    fn callers_held(&self) -> usize {
        self.callers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// Takes one place from `counter` if fewer than `max` are taken.
fn take(counter: &AtomicUsize, max: usize) -> bool {
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < max).then_some(n + 1)
        })
        .is_ok()
}

/// How a connection stands at its gate.
pub enum Entry {
    /// Admitted by the listener; the caller is not known yet.
    Admitted(Permit),
    /// Admitted by the listener and for its caller.
    Caller { _listener: Permit, _caller: Permit },
    /// Over `Limit`: every request is answered `503`, and the connection
    /// closes after the first.
    Shed(Limit, Permit),
}

impl Entry {
    /// The limit a shed connection is over.
    pub fn shed(&self) -> Option<Limit> {
        match self {
            Self::Shed(limit, _) => Some(*limit),
            _ => None,
        }
    }
}

enum Slot {
    Connection,
    Inflight,
    Shed,
    Caller(Arc<str>, Kind),
}

/// A place at a gate, given back when dropped.
pub struct Permit {
    gate: Arc<Gate>,
    slot: Slot,
    also: Option<Box<Permit>>,
}

impl Permit {
    fn new(gate: &Arc<Gate>, slot: Slot) -> Self {
        Self {
            gate: gate.clone(),
            slot,
            also: None,
        }
    }

    fn pair(mut first: Permit, second: Permit) -> Self {
        first.also = Some(Box::new(second));
        first
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.gate.release(&self.slot);
    }
}

/// The key a caller's places are counted under: its principal, or for an
/// anonymous caller its IP address, so that plaintext clients do not share
/// one budget (and one noisy client cannot use up everyone's).
pub fn caller_key(principal: &Principal, peer: SocketAddr) -> Arc<str> {
    match principal.spiffe_id() {
        Some(_) => Arc::from(principal.key()),
        None => Arc::from(format!("{}@{}", principal.key(), peer.ip())),
    }
}

/// A connection's standing at its gate, as its requests see it.
#[derive(Clone)]
pub struct Admitted {
    pub gate: Arc<Gate>,
    pub caller: Arc<str>,
    /// Set when the connection is shed: every request is refused with it.
    pub shed: Option<Limit>,
}

impl std::fmt::Debug for Admitted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admitted")
            .field("listener", &self.gate.listener)
            .field("caller", &self.caller)
            .field("shed", &self.shed)
            .finish()
    }
}

impl Admitted {
    /// A place for one request, or the limit that refuses it.
    pub fn request(&self) -> Result<Permit, Limit> {
        if let Some(limit) = self.shed {
            return Err(limit);
        }
        self.gate.request(&self.caller)
    }

    /// A place for one event stream.
    pub fn stream(&self) -> Result<Permit, Limit> {
        self.gate.stream(&self.caller)
    }

    /// Unlimited, for tests of the service that do not go through a
    /// listener.
    pub fn unlimited() -> Self {
        let max = usize::MAX;
        let limits = Limits {
            max_connections: max,
            max_connections_per_caller: max,
            max_inflight: max,
            max_inflight_per_caller: max,
            max_streams_per_caller: max,
        };
        Self {
            gate: Arc::new(Gate::new("test", limits, None)),
            caller: Arc::from("anonymous"),
            shed: None,
        }
    }
}

#[cfg(test)]
mod tests;
