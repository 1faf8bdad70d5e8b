//! Rule generation: pure functions from a [`ValidSpec`] to the text that
//! `iptables-restore` / `ip6tables-restore` or `nft -f` reads. Nothing here
//! touches the system, so the output is golden-tested as plain text.

mod iptables;
mod nft;

use std::fmt;
use std::str::FromStr;

use crate::spec::ValidSpec;

pub(crate) use iptables::{
    cleanup_lines, render_with_cleanup, transaction as iptables_transaction,
};
pub(crate) use nft::CLEAN as NFT_CLEAN;

/// Which firewall front end writes the rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Backend {
    /// `iptables-restore` and `ip6tables-restore` (legacy or nf_tables flavour).
    Iptables,
    /// `nft -f`, one `inet` table for both families.
    Nft,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Iptables => "iptables",
            Backend::Nft => "nft",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Backend {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "iptables" => Ok(Backend::Iptables),
            "nft" => Ok(Backend::Nft),
            other => Err(format!(
                "unknown backend {other:?}: expected iptables or nft"
            )),
        }
    }
}

/// IP family of an iptables script (nft covers both in one `inet` table).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    V4,
    V6,
}

/// The program a script is fed to, on its standard input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Program {
    IptablesRestore,
    Ip6tablesRestore,
    Nft,
}

impl Program {
    /// Executable and arguments. `--noflush` keeps rules we do not own (a
    /// CNI's, say); our own chains are flushed inside the same transaction.
    pub fn command(self) -> (&'static str, &'static [&'static str]) {
        match self {
            Program::IptablesRestore => ("iptables-restore", &["--noflush"]),
            Program::Ip6tablesRestore => ("ip6tables-restore", &["--noflush"]),
            Program::Nft => ("nft", &["-f", "-"]),
        }
    }

    /// The file extension of this program's goldens.
    pub fn golden_ext(self) -> &'static str {
        match self {
            Program::IptablesRestore => "iptables",
            Program::Ip6tablesRestore => "ip6tables",
            Program::Nft => "nft",
        }
    }

    pub(crate) fn for_family(family: Family) -> Program {
        match family {
            Family::V4 => Program::IptablesRestore,
            Family::V6 => Program::Ip6tablesRestore,
        }
    }
}

/// One atomic transaction: `text` piped into `program`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Script {
    pub program: Program,
    pub text: String,
}

/// The rules for `spec`, one script per transaction: for iptables one per
/// enabled family, for nft a single one. Mode `none` yields scripts that
/// install nothing (applying them removes earlier Portcullis rules).
pub fn rules(spec: &ValidSpec, backend: Backend) -> Vec<Script> {
    match backend {
        Backend::Nft => vec![Script {
            program: Program::Nft,
            text: nft::render(spec),
        }],
        Backend::Iptables => families(spec)
            .into_iter()
            .map(|family| Script {
                program: Program::for_family(family),
                text: iptables::render(spec, family),
            })
            .collect(),
    }
}

/// The enabled families, IPv4 first.
pub(crate) fn families(spec: &ValidSpec) -> Vec<Family> {
    let mut out = Vec::new();
    if spec.ipv4 {
        out.push(Family::V4);
    }
    if spec.ipv6 {
        out.push(Family::V6);
    }
    out
}

/// Human-readable form of several scripts, for `--dry-run`: each is preceded
/// by a comment naming the command it is fed to. Both programs treat lines
/// starting with `#` as comments.
pub fn render(scripts: &[Script]) -> String {
    let mut out = String::new();
    for script in scripts {
        let (exe, args) = script.program.command();
        out.push_str(&format!("# ---- {} {} ----\n", exe, args.join(" ")));
        out.push_str(&script.text);
    }
    out
}

/// Splits a port list into chunks the `multiport` match accepts: at most 15
/// ports per rule.
pub(crate) fn multiport_chunks(ports: &[u16]) -> impl Iterator<Item = String> + '_ {
    ports.chunks(15).map(crate::spec::join)
}
