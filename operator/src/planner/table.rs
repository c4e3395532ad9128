//! The human-readable form of a [`Plan`] (`octopus-operator plan` without `-o json`). Pure
//! text rendering; the JSON form is the serde serialisation of [`Plan`].

use std::fmt::Write as _;

use super::Plan;

/// Renders `plan` as a short summary followed by a numbered table of its steps.
pub fn render(plan: &Plan) -> String {
    let path = plan
        .path
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" -> ");
    let mut rows: Vec<(&str, String)> = vec![("change", plan.change.to_string())];
    match (plan.allowed, plan.reason) {
        (true, _) => rows.push(("allowed", "yes".to_owned())),
        (false, Some(reason)) => rows.push(("allowed", format!("no: {reason}"))),
        (false, None) => rows.push(("allowed", "no".to_owned())),
    }
    if let Some(message) = &plan.message {
        rows.push(("why", message.clone()));
    }
    if let Some(strategy) = plan.strategy {
        rows.push(("strategy", strategy.to_string()));
    }
    if plan.allowed {
        let backup = if plan.backup_required {
            "yes: database and Master Key, before any node stops"
        } else {
            "no"
        };
        rows.push(("backup", backup.to_owned()));
    }
    rows.push(("path", path));
    if plan.steps.is_empty() {
        let why = if plan.allowed {
            "none: nothing to change"
        } else {
            "none: blocked"
        };
        rows.push(("steps", why.to_owned()));
    }

    let mut out = format!("Upgrade plan {} -> {}\n", plan.from, plan.to);
    let label_width = rows.iter().map(|(label, _)| label.len()).max().unwrap_or(0);
    for (label, value) in &rows {
        // Writing to a String cannot fail.
        let _ = writeln!(out, "  {label:<label_width$}  {value}");
    }
    if plan.steps.is_empty() {
        return out;
    }

    let action_width = plan
        .steps
        .iter()
        .map(|s| s.action().len())
        .chain(["ACTION".len()])
        .max()
        .unwrap_or(0);
    let number_width = plan.steps.len().to_string().len().max(1);
    let _ = writeln!(
        out,
        "\n  {:>number_width$}  {:<action_width$}  NODE  WHAT",
        "#", "ACTION"
    );
    for (index, step) in plan.steps.iter().enumerate() {
        let node = step
            .node()
            .map_or_else(|| "-".to_owned(), |n| n.to_string());
        let _ = writeln!(
            out,
            "  {:>number_width$}  {:<action_width$}  {node:<4}  {}",
            index + 1,
            step.action(),
            step.describe()
        );
    }
    out
}
