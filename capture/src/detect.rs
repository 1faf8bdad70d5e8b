//! Choosing a backend when the user asked for `auto`.
//!
//! The rule: follow what the network namespace already uses.
//! 1. If `iptables` is the legacy (x_tables) flavour and the legacy nat or
//!    other tables already hold rules, use iptables: the pod's other rules are
//!    there, and keeping ours in the same framework keeps one ordering.
//! 2. Otherwise, if `nft` works, use nft: the kernel's native interface, one
//!    transaction for both families, and what `iptables-nft` writes anyway.
//! 3. Otherwise, if any `iptables` is installed, use it.
//! 4. Otherwise fail, naming the packages to install.

use crate::exec::Exec;
use crate::rules::Backend;

/// Which implementation `iptables` is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IptablesFlavour {
    /// `iptables-nft`: writes nf_tables underneath.
    Nft,
    /// `iptables-legacy`: the old x_tables interface.
    Legacy,
}

/// What detection looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostFacts {
    /// `nft list tables` succeeded.
    pub nft_usable: bool,
    /// `iptables --version` ran, and which flavour it reported.
    pub iptables: Option<IptablesFlavour>,
    /// The legacy tables of this namespace already hold rules.
    pub legacy_rules: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DetectError {
    #[error("no firewall backend works here: neither `nft list tables` nor `iptables --version` succeeded; install nftables or iptables, or pass --backend")]
    NoBackend,
}

/// The decision, as a pure function of the facts.
pub fn choose(facts: &HostFacts) -> Result<Backend, DetectError> {
    match facts {
        HostFacts {
            iptables: Some(IptablesFlavour::Legacy),
            legacy_rules: true,
            ..
        } => Ok(Backend::Iptables),
        HostFacts {
            nft_usable: true, ..
        } => Ok(Backend::Nft),
        HostFacts {
            iptables: Some(_), ..
        } => Ok(Backend::Iptables),
        _ => Err(DetectError::NoBackend),
    }
}

/// Gathers the facts by running the tools (read-only commands).
pub fn probe(exec: &dyn Exec) -> HostFacts {
    let nft_usable = exec.run("nft", &["list", "tables"], None).is_ok();
    let iptables = exec
        .run("iptables", &["--version"], None)
        .ok()
        .map(|v| flavour(&v));
    let legacy_rules = iptables == Some(IptablesFlavour::Legacy)
        && exec
            .run("iptables-save", &[], None)
            .is_ok_and(|save| save.lines().any(|l| l.starts_with("-A ")));
    HostFacts {
        nft_usable,
        iptables,
        legacy_rules,
    }
}

/// `iptables v1.8.9 (nf_tables)` or `iptables v1.8.9 (legacy)`; versions
/// before 1.8 print no flavour and are legacy.
fn flavour(version: &str) -> IptablesFlavour {
    if version.contains("nf_tables") {
        IptablesFlavour::Nft
    } else {
        IptablesFlavour::Legacy
    }
}

pub fn detect(exec: &dyn Exec) -> Result<Backend, DetectError> {
    choose(&probe(exec))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(nft: bool, ipt: Option<IptablesFlavour>, legacy_rules: bool) -> HostFacts {
        HostFacts {
            nft_usable: nft,
            iptables: ipt,
            legacy_rules,
        }
    }

    #[test]
    fn decision_table() {
        use IptablesFlavour::{Legacy, Nft};
        let cases = [
            (facts(true, Some(Nft), false), Ok(Backend::Nft)),
            (facts(true, None, false), Ok(Backend::Nft)),
            (facts(true, Some(Legacy), false), Ok(Backend::Nft)),
            (facts(true, Some(Legacy), true), Ok(Backend::Iptables)),
            (facts(false, Some(Legacy), false), Ok(Backend::Iptables)),
            (facts(false, Some(Nft), false), Ok(Backend::Iptables)),
            (facts(false, None, false), Err(DetectError::NoBackend)),
        ];
        for (f, want) in cases {
            assert_eq!(choose(&f), want, "{f:?}");
        }
    }

    #[test]
    fn flavour_from_version_text() {
        assert_eq!(
            flavour("iptables v1.8.9 (nf_tables)\n"),
            IptablesFlavour::Nft
        );
        assert_eq!(
            flavour("iptables v1.8.9 (legacy)\n"),
            IptablesFlavour::Legacy
        );
        assert_eq!(flavour("iptables v1.6.1\n"), IptablesFlavour::Legacy);
    }
}
