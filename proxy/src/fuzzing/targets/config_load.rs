//! The config loader on arbitrary text: an error, never a panic; a config
//! that loads also validates, and its upstream is a URI.

use crate::config::Config;

/// One fuzz input.
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(mut config) = Config::from_yaml(text) else {
        return;
    };
    assert!(config.validate().is_ok());
    assert!(
        config.upstream_uri().is_ok(),
        "validated upstream is not a URI"
    );
    let _ = config.chain();
    // Environment overrides come from the fuzz input too: a few variables.
    let env = |name: &str| name.len().is_multiple_of(3).then(|| text.to_string());
    let _ = config.apply_env(env);
    config.resolve_paths(std::path::Path::new("/nonexistent"));
}
