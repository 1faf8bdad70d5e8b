//! Hot reload. The config file and every filter file are polled; when one
//! changes, the policy and filters are reloaded, and every other section
//! that changed is named in a warning (it takes effect on restart). On a
//! change, a new chain is built off the request path (on a blocking
//! thread) and swapped in atomically. A chain that fails to build is
//! refused with a clear log, and the old one keeps serving.

use std::{
    collections::hash_map::DefaultHasher,
    hash::Hasher,
    io::Read,
    path::{Path, PathBuf},
    sync::Arc,
};

use tokio_util::sync::CancellationToken;

use crate::{
    config::Config,
    filter::{build_chain, FilterEngine, FilterMetrics},
    policy::PolicyHandle,
};

/// Hashes of the files a chain was built from.
#[derive(Debug, PartialEq, Eq)]
struct Fingerprint(Vec<(PathBuf, Option<u64>)>);

/// Streams the file through the hasher in small reads: a filter's
/// component is about a MiB, and reading it whole every `reload_interval`
/// put a MiB on the heap each time, which the allocator kept resident.
fn digest(path: &Path) -> Option<u64> {
    let mut file = std::fs::File::open(path).ok()?;
    let mut h = DefaultHasher::new();
    let mut buf = [0u8; 8192];
    loop {
        match file.read(&mut buf) {
            Ok(0) => return Some(h.finish()),
            Ok(n) => h.write(buf.get(..n)?),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
}

fn fingerprint(config: &Config, config_path: Option<&Path>) -> Fingerprint {
    // A filter's component and the files its config is read from.
    let mut files: Vec<PathBuf> = config
        .filters
        .iter()
        .flat_map(|f| std::iter::once(&f.path).chain(f.config_files.values()))
        .cloned()
        .collect();
    files.extend(config_path.map(Path::to_path_buf));
    Fingerprint(
        files
            .into_iter()
            .map(|p| {
                let d = digest(&p);
                (p, d)
            })
            .collect(),
    )
}

pub struct Reloader {
    pub engine: Arc<FilterEngine>,
    pub handle: Arc<PolicyHandle>,
    pub metrics: FilterMetrics,
    pub config: Config,
    pub config_path: Option<PathBuf>,
}

impl Reloader {
    /// Polls until `stop`.
    pub async fn run(mut self, stop: CancellationToken) {
        let mut seen = fingerprint(&self.config, self.config_path.as_deref());
        let mut tick = tokio::time::interval(self.config.filter_engine.reload_interval);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            if fingerprint(&self.config, self.config_path.as_deref()) == seen {
                continue;
            }
            let interval = self.config.filter_engine.reload_interval;
            self.reload().await;
            if self.config.filter_engine.reload_interval != interval {
                tick = tokio::time::interval(self.config.filter_engine.reload_interval);
            }
            // The new config may name other files.
            seen = fingerprint(&self.config, self.config_path.as_deref());
        }
    }

    async fn reload(&mut self) {
        let next = match &self.config_path {
            // The environment overrides what the injected pod sets, as at
            // start (`Config::load_with_env`), so that a reload does not
            // see those sections as changed.
            Some(path) => match Config::load_with_env(path, |name| std::env::var(name).ok()) {
                Ok(next) => next,
                Err(e) => return self.refused(&e.to_string()),
            },
            None => self.config.clone(),
        };
        let (engine, metrics, candidate) =
            (self.engine.clone(), self.metrics.clone(), next.clone());
        let built =
            tokio::task::spawn_blocking(move || build_chain(&engine, &candidate.chain(), &metrics))
                .await;
        match built {
            Ok(Ok(chain)) => {
                let names = chain.filter_names().join(", ");
                self.handle.swap(Box::new(chain));
                self.metrics.reload("success");
                tracing::info!(filters = %names, "filter chain reloaded");
                let restart = self.config.restart_needed(&next);
                if !restart.is_empty() {
                    tracing::warn!(
                        sections = %restart.join(", "),
                        "these config sections changed but take effect on restart only"
                    );
                }
                self.config = next;
            }
            Ok(Err(e)) => self.refused(&e.to_string()),
            Err(e) => self.refused(&format!("reload task failed: {e}")),
        }
    }

    fn refused(&self, why: &str) {
        self.metrics.reload("failure");
        tracing::error!(error = %why, "filter chain reload refused; the previous chain keeps serving");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_follows_every_byte_of_a_large_file() {
        let dir = std::env::temp_dir().join(format!("pc-reload-digest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("filter.wasm");
        let mut bytes = vec![7u8; 100_000];
        std::fs::write(&path, &bytes).unwrap();
        let first = digest(&path).unwrap();
        assert_eq!(digest(&path), Some(first), "same bytes, same digest");
        // A change past the first read is seen.
        bytes[99_999] = 8;
        std::fs::write(&path, &bytes).unwrap();
        assert_ne!(digest(&path), Some(first));
        assert_eq!(digest(&dir.join("missing")), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
