//! The L3/L4 half of the policy: `node.toml` + `policy.toml` compiled into ONE nftables
//! table, `inet igw`, and the plan to put it in the kernel. Pure: rendering returns values;
//! the CLI runs `nft`.
//!
//! Diversion uses `redirect` in a nat prerouting chain, not TPROXY: the proxy reads the
//! original destination with `SO_ORIGINAL_DST`, no policy routing or `IP_TRANSPARENT` is
//! needed, and the translation lives in conntrack, which a table reload does not touch.
//!
//! Applying replaces only `inet igw`, in one transaction (`add table`, `delete table`,
//! then the full content: the kernel commits all or nothing). When the running table has
//! the same structure (same fingerprint) and only set elements differ, the plan is an
//! element update instead: counters, rules and handles stay.

pub mod batch;
pub mod compile;
pub mod ir;
pub mod running;
pub mod sysctl;
pub mod textdiff;

pub use compile::{CompileError, Compiled, compile};
pub use ir::{Fam, TABLE, Table};
pub use running::{Running, SetDelta};

use nftables::schema::{NfCmd, NfObject, Nftables};

/// How an apply changes the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// The running table is already the compiled one.
    Nothing,
    /// Replace the whole table (first apply, or the structure changed).
    Full,
    /// Same structure: add and delete elements of these sets.
    Elements(Vec<(String, SetDelta)>),
}

impl Plan {
    /// One line for the operator: what the apply does.
    pub fn describe(&self) -> String {
        match self {
            Plan::Nothing => "no change: the running table is the compiled one".into(),
            Plan::Full => "full reload of table inet igw (one transaction)".into(),
            Plan::Elements(d) => {
                let add: usize = d.iter().map(|(_, x)| x.add.len()).sum();
                let rem: usize = d.iter().map(|(_, x)| x.remove.len()).sum();
                let names: Vec<&str> = d.iter().map(|(n, _)| n.as_str()).collect();
                format!(
                    "incremental element update: +{add} -{rem} in {} (one transaction, no reload)",
                    names.join(", ")
                )
            }
        }
    }
}

/// Decides between nothing, an element update and a full reload.
pub fn plan(compiled: &Compiled, running: Option<&Running>) -> Plan {
    let Some(run) = running else {
        return Plan::Full;
    };
    if run.fingerprint.as_deref() != Some(compiled.fingerprint.as_str()) {
        return Plan::Full;
    }
    let mut deltas = Vec::new();
    for set in &compiled.table.sets {
        let Some(old) = run.sets.get(&set.name) else {
            return Plan::Full;
        };
        let d = running::delta(old, &set.elems);
        if !d.add.is_empty() || !d.remove.is_empty() {
            deltas.push((set.name.clone(), d));
        }
    }
    if run.sets.len() != compiled.table.sets.len() {
        return Plan::Full;
    }
    if deltas.is_empty() {
        Plan::Nothing
    } else {
        Plan::Elements(deltas)
    }
}

/// The transaction that replaces `table inet igw` whole. `add table` first makes the
/// `delete` valid on a first apply; the kernel commits the batch atomically.
pub fn full_replace(compiled: &Compiled) -> Nftables<'static> {
    let mut objs = vec![
        NfObject::CmdObject(NfCmd::Add(ir::table_obj())),
        NfObject::CmdObject(NfCmd::Delete(ir::table_obj())),
    ];
    objs.extend(compiled.table.add_objects(true));
    Nftables {
        objects: objs.into(),
    }
}

/// The transaction of an element update: deletes first (an added prefix may cover a
/// deleted one), then adds.
pub fn element_update(deltas: &[(String, SetDelta)]) -> Nftables<'static> {
    let mut objs = Vec::new();
    for (set, d) in deltas {
        if !d.remove.is_empty() {
            objs.push(NfObject::CmdObject(NfCmd::Delete(ir::element_obj(
                set, &d.remove,
            ))));
        }
    }
    for (set, d) in deltas {
        if !d.add.is_empty() {
            objs.push(NfObject::CmdObject(NfCmd::Add(ir::element_obj(
                set, &d.add,
            ))));
        }
    }
    Nftables {
        objects: objs.into(),
    }
}

/// The transaction as the JSON `nft -j -f -` reads.
pub fn to_json(n: &Nftables<'_>) -> String {
    // The schema types are plain data; serialising them cannot fail.
    serde_json::to_string(n).unwrap_or_default()
}

/// A human-readable rendering of the compiled table (`igw ruleset render`).
pub fn render_text(c: &Compiled) -> String {
    c.table.text()
}

/// Test hook of `igw ruleset apply --fault-inject`: appends a rule that jumps to a chain
/// that does not exist, so the kernel refuses the whole transaction after having
/// processed the rest of it. Proves a refused transaction changes nothing.
pub fn with_fault(tx: Nftables<'static>) -> Nftables<'static> {
    use nftables::schema::{NfListObject, Rule};
    use nftables::stmt::{JumpTarget, Statement};
    use nftables::types::NfFamily;
    let mut objs = tx.objects.into_owned();
    objs.push(NfObject::CmdObject(NfCmd::Add(NfListObject::Rule(Rule {
        family: NfFamily::INet,
        table: TABLE.into(),
        chain: "forward".into(),
        expr: vec![Statement::Jump(JumpTarget {
            target: "igw_fault_injection_no_such_chain".into(),
        })]
        .into(),
        ..Rule::default()
    }))));
    Nftables {
        objects: objs.into(),
    }
}
