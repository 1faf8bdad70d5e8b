//! What the results were measured on.

use serde::Serialize;
use tokio::process::Command;

use crate::targets::Paths;

#[derive(Serialize)]
pub struct Machine {
    pub date: String,
    pub cpu: String,
    pub cores: usize,
    pub memory: String,
    pub kernel: String,
    pub portcullis: String,
    pub envoy: String,
}

async fn output(cmd: &str, args: &[&str]) -> String {
    match Command::new(cmd).args(args).output().await {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
        _ => "unknown".into(),
    }
}

pub async fn describe(paths: &Paths) -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |text: &str, key: &str| {
        text.lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_else(|| "unknown".into())
    };
    let mem_kb: f64 = field(&meminfo, "MemTotal")
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap_or(0.0);
    let envoy = match &paths.envoy {
        Some(p) => output(&p.display().to_string(), &["--version"]).await,
        None => "not measured".into(),
    };
    Machine {
        date: output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).await,
        cpu: field(&cpuinfo, "model name"),
        cores: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        memory: format!("{:.0} GiB", mem_kb / (1024.0 * 1024.0)),
        kernel: output("uname", &["-r"]).await,
        // The binary's path says which build was measured (release,
        // sidecar, or a PGO build under target/pgo).
        portcullis: format!(
            "{} (git {}), `{}`",
            output(&paths.portcullis.display().to_string(), &["--version"]).await,
            output("git", &["rev-parse", "--short", "HEAD"]).await,
            std::env::current_dir()
                .ok()
                .and_then(|cwd| paths.portcullis.strip_prefix(cwd).ok())
                .unwrap_or(&paths.portcullis)
                .display()
        ),
        envoy: envoy
            .split_whitespace()
            .find(|w| w.contains("/1."))
            .map(str::to_string)
            .unwrap_or(envoy),
    }
}
