//! Comparing the manifest a client asked for with the resolved manifest a receipt embeds, field by
//! field: everything the client set must be what ran; what the provider's policy filled in
//! (unset limits, the default `[tensor]` grant) is reported as the provider's choice.

use std::collections::BTreeSet;

use super::{Basis, Verification};
use crate::limits::LimitKind;
use crate::manifest::{Capability, Manifest, TensorSection};

/// Adds a `request.*` row for every field of `requested` to `report`.
pub(super) fn compare(report: &mut Verification, requested: &Manifest, ran: &Manifest) {
    let mut field = |name: &str, asked: String, got: String| report.push(Basis::Request, format!("request.{name}"), asked, got);
    field("format", requested.format.to_string(), ran.format.to_string());
    field("module", requested.module.to_string(), ran.module.to_string());
    field("args", json(&requested.args), json(&ran.args));
    field("stdin", json(&requested.stdin), json(&ran.stdin));
    field("start_time_unix", requested.start_time_unix.to_string(), ran.start_time_unix.to_string());
    field("seed", requested.seed.to_string(), ran.seed.to_string());
    // Resolution sorts capabilities; their order means nothing.
    let capabilities = |m: &Manifest| json(&m.capabilities.iter().map(|c| c.as_str()).collect::<BTreeSet<_>>());
    field("capabilities", capabilities(requested), capabilities(ran));
    field("env", json(&requested.env), json(&ran.env));
    field("inputs", json(&requested.inputs), json(&ran.inputs));
    field("mounts", json(&requested.mounts), json(&ran.mounts));
    // Resolution writes the ops in the ABI's order, and grants every op with a full trace when
    // the tensor capability is asked for without a `[tensor]` table.
    let tensor = |section: Option<&TensorSection>| {
        json(&section.map(|t| serde_json::json!({"ops": t.granted_ops().iter().map(|op| op.name()).collect::<Vec<_>>(), "trace": t.trace.as_str()})))
    };
    let asked = match &requested.tensor {
        None if requested.capabilities.contains(&Capability::Tensor) => tensor(Some(&TensorSection::default())),
        section => tensor(section.as_ref()),
    };
    field("tensor", asked, tensor(ran.tensor.as_ref()));
    for kind in LimitKind::ALL {
        let got = ran.limits.get(kind).map_or("unset".to_string(), |v| v.to_string());
        match requested.limits.get(kind) {
            Some(asked) => report.push(Basis::Request, format!("request.limits.{kind}"), asked, got),
            None => report.claim(format!("request.limits.{kind}"), got, "not asked for: the provider's policy chose it"),
        }
    }
}

fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}
