//! The policy in force, swappable while requests are in flight. A request
//! takes a snapshot once and uses it throughout, so a reload never changes
//! the rules in the middle of one exchange.

use std::sync::Arc;

use arc_swap::ArcSwap;

use super::Policy;

pub type Snapshot = Arc<Box<dyn Policy>>;

pub struct PolicyHandle(ArcSwap<Box<dyn Policy>>);

impl PolicyHandle {
    pub fn new(policy: Box<dyn Policy>) -> Self {
        Self(ArcSwap::from_pointee(policy))
    }

    pub fn snapshot(&self) -> Snapshot {
        self.0.load_full()
    }

    pub fn swap(&self, policy: Box<dyn Policy>) {
        self.0.store(Arc::new(policy));
    }
}
