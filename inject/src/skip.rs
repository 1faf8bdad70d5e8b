//! Pods that are admitted unchanged.

use crate::mutate::{already_injected, opted_out, Decision};
use crate::pod::PodObject;
use crate::InjectError;

const OTHER_MESH_CONTAINERS: [(&str, &str); 2] =
    [("istio-proxy", "Istio"), ("linkerd-proxy", "Linkerd")];
const OTHER_MESH_ANNOTATIONS: [(&str, &str); 2] = [
    ("sidecar.istio.io/status", "Istio"),
    ("linkerd.io/proxy-version", "Linkerd"),
];

fn skip(reason: impl Into<String>, warn: bool) -> Option<Decision> {
    Some(Decision::Skip {
        reason: reason.into(),
        warn,
    })
}

/// `Some` when the pod must be admitted without a patch.
pub fn skip_reason(pod: &PodObject) -> Result<Option<Decision>, InjectError> {
    if opted_out(pod)? {
        return Ok(skip(
            "opted out by the pod label portcullis.dev/inject=false",
            false,
        ));
    }
    if already_injected(pod)? {
        return Ok(skip("already injected", false));
    }
    if pod.spec().host_network == Some(true) {
        // Capture rules would be written into the node's network namespace.
        return Ok(skip(
            "portcullis: not injected: hostNetwork pods are never injected",
            true,
        ));
    }
    if pod
        .annotations()
        .contains_key("kubernetes.io/config.mirror")
    {
        return Ok(skip("mirror pod", false));
    }
    if let Some(mesh) = other_mesh(pod) {
        return Ok(skip(
            format!(
                "portcullis: not injected: the pod already has a {mesh} proxy; two meshes \
                 capturing the same traffic would break it"
            ),
            true,
        ));
    }
    Ok(None)
}

fn other_mesh(pod: &PodObject) -> Option<&'static str> {
    let by_container = OTHER_MESH_CONTAINERS
        .iter()
        .find(|(name, _)| pod.container_names().any(|n| n == *name));
    let annotations = pod.annotations();
    let by_annotation = OTHER_MESH_ANNOTATIONS
        .iter()
        .find(|(key, _)| annotations.contains_key(*key));
    by_container.or(by_annotation).map(|(_, mesh)| *mesh)
}
