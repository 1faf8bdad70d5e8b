//! The config loader on arbitrary text: an error, never a panic; a config
//! that loads also validates, and its upstream is a URI.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::Config;

fuzz_target!(|text: &str| {
    let Ok(mut config) = Config::from_yaml(text) else {
        return;
    };
    assert!(config.validate().is_ok());
    assert!(config.upstream_uri().is_ok(), "validated upstream is not a URI");
    let _ = config.chain();
    let _ = config.instance_id();
    // Environment overrides come from the fuzz input too: a few variables.
    let env = |name: &str| (name.len() % 3 == 0).then(|| text.to_string());
    let _ = config.apply_env(env);
    config.resolve_paths(std::path::Path::new("/nonexistent"));
});
