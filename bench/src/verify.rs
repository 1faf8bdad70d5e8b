//! Before anything is measured, each configuration must show that it
//! enforces the policy it claims: a fast proxy that lets everything
//! through would win every table.

use crate::conn::Endpoint;
use crate::load::{self, TEXT};
use crate::targets::{Kind, Proxy};

#[derive(Debug, thiserror::Error)]
#[error("configuration {kind} ({label}): {what}")]
pub struct PolicyError {
    kind: Kind,
    label: &'static str,
    what: String,
}

/// A call and whether `kind` must serve it.
struct Case {
    tool: &'static str,
    text: &'static str,
    served: fn(Kind) -> bool,
}

const CASES: [Case; 3] = [
    Case {
        tool: "echo",
        text: TEXT,
        served: |_| true,
    },
    // Every proxy with a policy allows echo alone; direct and the bare
    // forwarder (no policy) serve other tools too.
    Case {
        tool: "delete_file",
        text: "x",
        served: |k| matches!(k.proxy(), Proxy::None | Proxy::Forwarder),
    },
    // Only the configurations that check arguments (d, f, i) refuse this.
    Case {
        tool: "echo",
        text: "please DROP TABLE users",
        served: |k| !matches!(k, Kind::D | Kind::F | Kind::I),
    },
];

pub async fn enforces_policy(kind: Kind, endpoint: &Endpoint) -> Result<(), PolicyError> {
    for case in &CASES {
        let got = load::probe(endpoint, case.tool, case.text).await;
        let want = (case.served)(kind);
        let what = match (&got, want) {
            (Ok(()), false) => format!(
                "served {}({:?}), which its policy must refuse",
                case.tool, case.text
            ),
            (Err(e), true) => format!(
                "refused {}({:?}), which it must serve: {e}",
                case.tool, case.text
            ),
            _ => continue,
        };
        return Err(PolicyError {
            kind,
            label: kind.label(),
            what,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_configuration_that_serves_a_forbidden_tool_is_caught() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = Endpoint::plain(listener.local_addr().unwrap());
        tokio::spawn(crate::upstream::serve_on(listener));
        // The upstream serves everything: right for direct...
        enforces_policy(Kind::A, &endpoint).await.unwrap();
        // ...and caught if a proxy configuration behaved like it.
        let err = enforces_policy(Kind::E, &endpoint).await.unwrap_err();
        assert!(err.to_string().contains("served delete_file"), "{err}");
    }
}
