//! Applying and removing the rules: the generated text piped into
//! `iptables-restore` / `ip6tables-restore` or `nft -f`.
//!
//! Idempotence: running twice gives the same tables. For nft the generated
//! text itself deletes and re-creates our table. For iptables the current nat
//! table is read first (`iptables-save -t nat`) and the removal of whatever
//! Portcullis put there (`-D` jumps, `-F`/`-X` our chains) is placed at the
//! head of the same `COMMIT`, so the swap is atomic.

use crate::exec::{Exec, ExecError, System};
use crate::rules::{self, Backend, Family, Program, Script};
use crate::spec::ValidSpec;

/// Applies `spec` with `backend` on the real system. With `dry_run`, runs
/// nothing and returns the scripts that a fresh apply would feed the tools.
/// Returns the scripts, as (or as they would be) applied.
pub fn apply(spec: &ValidSpec, backend: Backend, dry_run: bool) -> Result<Vec<Script>, ExecError> {
    apply_with(&System, spec, backend, dry_run)
}

/// Removes every Portcullis rule for the given families (nft removes our one
/// table whatever the families). With `dry_run`, only reads.
pub fn clean(
    backend: Backend,
    families: &[Family],
    dry_run: bool,
) -> Result<Vec<Script>, ExecError> {
    clean_with(&System, backend, families, dry_run)
}

pub fn apply_with(
    exec: &dyn Exec,
    spec: &ValidSpec,
    backend: Backend,
    dry_run: bool,
) -> Result<Vec<Script>, ExecError> {
    if dry_run {
        return Ok(rules::rules(spec, backend));
    }
    let scripts = match backend {
        Backend::Nft => rules::rules(spec, backend),
        Backend::Iptables => {
            let mut scripts = Vec::new();
            for family in rules::families(spec) {
                let cleanup = rules::cleanup_lines(&save_nat(exec, family)?);
                scripts.push(Script {
                    program: Program::for_family(family),
                    text: rules::render_with_cleanup(spec, family, &cleanup),
                });
            }
            scripts
        }
    };
    run_all(exec, &scripts)?;
    Ok(scripts)
}

pub fn clean_with(
    exec: &dyn Exec,
    backend: Backend,
    families: &[Family],
    dry_run: bool,
) -> Result<Vec<Script>, ExecError> {
    let scripts = match backend {
        Backend::Nft => vec![Script {
            program: Program::Nft,
            text: format!("# Remove the Portcullis table.\n{}", rules::NFT_CLEAN),
        }],
        Backend::Iptables => {
            let mut scripts = Vec::new();
            for &family in families {
                let cleanup = rules::cleanup_lines(&save_nat(exec, family)?);
                scripts.push(Script {
                    program: Program::for_family(family),
                    text: rules::iptables_transaction(
                        "# Remove the Portcullis chains.\n",
                        &cleanup,
                        &[],
                    ),
                });
            }
            scripts
        }
    };
    if !dry_run {
        run_all(exec, &scripts)?;
    }
    Ok(scripts)
}

fn save_nat(exec: &dyn Exec, family: Family) -> Result<String, ExecError> {
    let save = match family {
        Family::V4 => "iptables-save",
        Family::V6 => "ip6tables-save",
    };
    exec.run(save, &["-t", "nat"], None)
}

/// Runs the scripts in order, stopping at the first failure. Each script is
/// atomic on its own; a v6 failure after a v4 success leaves v4 applied,
/// and the error makes the init container (and so the pod) fail.
fn run_all(exec: &dyn Exec, scripts: &[Script]) -> Result<(), ExecError> {
    for script in scripts {
        let (program, args) = script.program.command();
        exec.run(program, args, Some(&script.text))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;
    use crate::spec::CaptureSpec;

    /// Records every call; answers `*-save` with `save`.
    struct Fake {
        save: &'static str,
        calls: RefCell<Vec<(String, Option<String>)>>,
    }

    impl Exec for Fake {
        fn run(
            &self,
            program: &str,
            args: &[&str],
            stdin: Option<&str>,
        ) -> Result<String, ExecError> {
            let cmd = format!("{program} {}", args.join(" "));
            self.calls
                .borrow_mut()
                .push((cmd, stdin.map(str::to_string)));
            Ok(if program.ends_with("-save") {
                self.save.to_string()
            } else {
                String::new()
            })
        }
    }

    const OLD: &str =
        "*nat\n:PORTCULLIS_INBOUND - [0:0]\n-A PREROUTING -p tcp -j PORTCULLIS_INBOUND\nCOMMIT\n";

    fn spec_v4() -> ValidSpec {
        CaptureSpec {
            ipv6: false,
            ..CaptureSpec::default()
        }
        .validate()
        .unwrap()
    }

    #[test]
    fn iptables_apply_removes_old_rules_in_the_same_transaction() {
        let fake = Fake {
            save: OLD,
            calls: RefCell::default(),
        };
        apply_with(&fake, &spec_v4(), Backend::Iptables, false).unwrap();
        let calls = fake.calls.into_inner();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].0, "iptables-save -t nat");
        assert_eq!(calls[1].0, "iptables-restore --noflush");
        let text = calls[1].1.as_deref().unwrap();
        let head = "*nat\n-D PREROUTING -p tcp -j PORTCULLIS_INBOUND\n-F PORTCULLIS_INBOUND\n-X PORTCULLIS_INBOUND\n:PORTCULLIS_INBOUND";
        assert!(text.contains(head), "{text}");
        assert_eq!(text.matches("COMMIT").count(), 1);
    }

    #[test]
    fn dry_run_runs_nothing() {
        let fake = Fake {
            save: OLD,
            calls: RefCell::default(),
        };
        let scripts = apply_with(&fake, &spec_v4(), Backend::Nft, true).unwrap();
        assert!(fake.calls.borrow().is_empty());
        assert_eq!(scripts, rules::rules(&spec_v4(), Backend::Nft));
    }

    #[test]
    fn nft_apply_and_clean_are_single_transactions() {
        let fake = Fake {
            save: "",
            calls: RefCell::default(),
        };
        apply_with(&fake, &spec_v4(), Backend::Nft, false).unwrap();
        clean_with(&fake, Backend::Nft, &[Family::V4, Family::V6], false).unwrap();
        let calls = fake.calls.into_inner();
        let cmds: Vec<&str> = calls.iter().map(|c| c.0.as_str()).collect();
        assert_eq!(cmds, ["nft -f -", "nft -f -"]);
        let clean = calls[1].1.as_deref().unwrap();
        assert!(clean.ends_with("add table inet portcullis\ndelete table inet portcullis\n"));
    }

    #[test]
    fn iptables_clean_covers_each_family() {
        let fake = Fake {
            save: OLD,
            calls: RefCell::default(),
        };
        let scripts =
            clean_with(&fake, Backend::Iptables, &[Family::V4, Family::V6], false).unwrap();
        assert_eq!(scripts.len(), 2);
        for s in &scripts {
            assert!(
                s.text.contains("-X PORTCULLIS_INBOUND\nCOMMIT\n"),
                "{}",
                s.text
            );
        }
        let cmds: Vec<String> = fake.calls.into_inner().into_iter().map(|c| c.0).collect();
        assert_eq!(
            cmds,
            [
                "iptables-save -t nat",
                "ip6tables-save -t nat",
                "iptables-restore --noflush",
                "ip6tables-restore --noflush"
            ]
        );
    }
}
