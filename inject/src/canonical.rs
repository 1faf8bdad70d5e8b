//! Deterministic JSON text for values embedded as strings (the status
//! annotation, the probes env var). serde_json keeps insertion order when
//! some crate in the build enables `preserve_order`, so keys are sorted
//! explicitly: the same pod must give byte-identical patches.

use serde_json::Value;

pub fn sorted(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut entries: Vec<_> = m.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k.clone(), sorted(v)))
                    .collect(),
            )
        }
        Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

pub fn to_string(v: &Value) -> String {
    sorted(v).to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys_are_sorted_at_every_depth() {
        let v = serde_json::json!({"b": {"z": 1, "a": [{"y": 1, "x": 2}]}, "a": 0});
        assert_eq!(
            super::to_string(&v),
            r#"{"a":0,"b":{"a":[{"x":2,"y":1}],"z":1}}"#
        );
    }
}
