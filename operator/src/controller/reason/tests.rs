//! The reason vocabulary stays one vocabulary: the README documents every reason, the
//! planner's and the Octopus client's names map onto it unchanged, and no reason is
//! spelled as a string anywhere else in the controller.

use std::path::{Path, PathBuf};

use strum::IntoEnumIterator;

use super::*;
use crate::controller::steps::{StepKind, StepState};
use crate::planner::Strategy;

fn readme() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The rows of the README's reasons table: (reason, meaning, what to do).
fn readme_rows(text: &str) -> Vec<(String, String, String)> {
    let Some(start) = text.find("\n## Reasons\n") else {
        return Vec::new();
    };
    text[start..]
        .lines()
        .skip_while(|l| !l.starts_with("| reason |"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            let cells: Vec<String> = l
                .trim_matches('|')
                .split(" | ")
                .map(|c| c.trim().to_string())
                .collect();
            let get = |i: usize| cells.get(i).cloned().unwrap_or_default();
            (get(0).trim_matches('`').to_string(), get(1), get(2))
        })
        .collect()
}

#[test]
fn the_readme_table_lists_every_reason_in_order_and_nothing_else() {
    let rows = readme_rows(&readme());
    let names: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    let reasons: Vec<&str> = Reason::iter().map(Reason::as_str).collect();
    assert_eq!(names, reasons, "README.md ## Reasons is out of date");
    for ((name, meaning, todo), reason) in rows.iter().zip(Reason::iter()) {
        assert!(
            !meaning.is_empty() && !todo.is_empty(),
            "README.md: {name} needs a meaning and what to do"
        );
        // The table says what the code does with the reason.
        let says = |word: &str| meaning.contains(word);
        assert_eq!(
            says("Stop"),
            reason.blocks(),
            "README.md: {name} is a stop?"
        );
        assert_eq!(
            says("sticky"),
            reason.sticky(),
            "README.md: {name} is sticky?"
        );
        if reason.blocks() {
            assert_eq!(
                says("degraded"),
                reason.degraded(),
                "README.md: {name} degrades?"
            );
        }
    }
}

#[test]
fn names_decode_to_their_reason() {
    for reason in Reason::iter() {
        assert_eq!(reason.as_str().parse::<Reason>(), Ok(reason));
        assert_eq!(reason.to_string(), reason.as_str());
    }
}

#[test]
fn the_planners_and_the_clients_names_are_kept() {
    for b in BlockReason::ALL {
        assert_eq!(Reason::from(b).as_str(), b.as_str());
        assert!(
            Reason::from(b).blocks() && !Reason::from(b).degraded(),
            "{b}"
        );
    }
    let route = || "GET /api".to_string();
    let errors = [
        OctopusError::InvalidEndpoint {
            detail: String::new(),
        },
        OctopusError::Unauthorized {
            route: route(),
            status: 401,
            message: String::new(),
        },
        OctopusError::NotFound {
            route: route(),
            message: String::new(),
        },
        OctopusError::Rejected {
            route: route(),
            status: 400,
            message: String::new(),
        },
        OctopusError::Server {
            route: route(),
            status: 500,
            message: String::new(),
        },
        OctopusError::Timeout {
            route: route(),
            after: std::time::Duration::from_secs(1),
        },
        OctopusError::Unreachable {
            route: route(),
            detail: String::new(),
        },
        OctopusError::BadResponse {
            route: route(),
            status: 200,
            detail: String::new(),
        },
    ];
    for e in &errors {
        assert_eq!(Reason::from(e).as_str(), e.reason());
        assert!(Reason::from(e).degraded() && !Reason::from(e).blocks());
    }
}

#[test]
fn a_sticky_stop_blocks_and_degrades() {
    let sticky: Vec<Reason> = Reason::iter().filter(|r| r.sticky()).collect();
    assert_eq!(
        sticky,
        [
            Reason::NodeFailedAfterMigration,
            Reason::NodeFailedToStart,
            Reason::NodeNotReady,
            Reason::NodeVersionMismatch,
        ]
    );
    assert!(sticky.iter().all(|r| r.blocks() && r.degraded()));
}

// ------------------------------------------------------------- no reason as a string

/// PascalCase words the controller may spell, because they are not its reasons but
/// Kubernetes's or Octopus's vocabulary, per file (relative to `src/controller`).
const NOT_REASONS: &[(&str, &[&str])] = &[
    (
        "conditions.rs",
        // Condition types and statuses.
        &[
            "Ready",
            "Progressing",
            "Degraded",
            "UpgradeBlocked",
            "Paused",
            "True",
            "False",
        ],
    ),
    (
        "observe.rs",
        // Pod and Job conditions, container waiting reasons.
        &[
            "Ready",
            "True",
            "CrashLoopBackOff",
            "CreateContainerConfigError",
            "ImagePullBackOff",
            "ErrImagePull",
            "InvalidImageName",
            "CreateContainerError",
            "Complete",
            "Failed",
        ],
    ),
    // A condition status.
    ("record.rs", &["True"]),
    // Condition statuses, read back from status for the per-cluster series.
    ("metrics.rs", &["True", "False"]),
    // Arguments of Octopus's Upgrade and UpdateCalamari tasks.
    ("act.rs", &["EnvironmentId", "MachineIds"]),
];

/// Files that may hold a reason as a string, and why: they copy it from a status the API
/// server returned, whatever operator version wrote it.
const REASONS_READ_BACK: &[(&str, &str)] = &[(
    "metrics.rs",
    "metric labels copy condition reasons from the status as the API server returns it",
)];

/// Why `code` (one source file's code, tests cut off) spells a reason as a string.
fn reasons_spelled_as_strings(file: &str, code: &str) -> Vec<String> {
    let allowed = NOT_REASONS
        .iter()
        .find(|(f, _)| *f == file)
        .map_or(&[][..], |(_, words)| *words);
    let mut found = Vec::new();
    for (line, literal) in string_literals(code) {
        if is_pascal_word(&literal) && !allowed.contains(&literal.as_str()) {
            found.push(format!("{file}:{line}: {literal:?} looks like a reason"));
        }
        // `format!("WaitingFor{}", ...)`: a name built at run time.
        let head: String = literal.chars().take_while(|c| *c != '{').collect();
        if head.len() < literal.len() && is_pascal_word(&head) {
            found.push(format!("{file}:{line}: {literal:?} builds a reason"));
        }
    }
    // Step names: decoded once in `steps`, matched as `StepKind` everywhere else.
    let steps: Vec<&str> = StepKind::iter()
        .map(StepKind::as_str)
        .chain(StepState::iter().map(StepState::as_str))
        .chain([Strategy::Rolling.as_str(), Strategy::StopTheWorld.as_str()])
        .collect();
    for (line, literal) in string_literals(code) {
        if steps.contains(&literal.as_str()) {
            found.push(format!("{file}:{line}: {literal:?} is a step name"));
        }
    }
    if REASONS_READ_BACK.iter().any(|(f, _)| *f == file) {
        return found;
    }
    let code_only: String = string_literals_blanked(code);
    for (i, text) in code_only.lines().enumerate() {
        let squeezed: String = text.split_whitespace().collect();
        for typed in [
            "reason:String",
            "reason:&str",
            "reason:&'staticstr",
            "reason:Option<String>",
        ] {
            // `reason: String`, not `kubelet_reason: String`.
            let declared = squeezed.match_indices(typed).any(|(at, _)| {
                !squeezed[..at]
                    .chars()
                    .next_back()
                    .is_some_and(|c| c.is_alphanumeric() || c == '_')
            });
            if declared {
                found.push(format!("{file}:{}: a reason typed as a string", i + 1));
            }
        }
    }
    found
}

/// `NodeNotReady`, `Drain`: one word of letters and digits, capital first, not all capitals.
fn is_pascal_word(s: &str) -> bool {
    s.chars().next().is_some_and(|c| c.is_ascii_uppercase())
        && s.chars().all(|c| c.is_ascii_alphanumeric())
        && s.chars().any(|c| c.is_ascii_lowercase())
}

/// The string literals of Rust `code` with their line numbers; comments and character
/// literals are skipped.
fn string_literals(code: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let chars: Vec<char> = code.chars().collect();
    let (mut i, mut line) = (0, 1);
    while i < chars.len() {
        match chars[i] {
            '\n' => line += 1,
            '/' if chars.get(i + 1) == Some(&'/') => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
                continue;
            }
            '\'' if chars.get(i + 2) == Some(&'\'') => i += 2,
            '\'' if chars.get(i + 1) == Some(&'\\') => {
                while i + 1 < chars.len() && chars[i + 1] != '\'' {
                    i += 1;
                }
                i += 1;
            }
            '"' => {
                let start_line = line;
                let mut literal = String::new();
                i += 1;
                while i < chars.len() && chars[i] != '"' {
                    if chars[i] == '\\' {
                        i += 1;
                    }
                    if chars.get(i) == Some(&'\n') {
                        line += 1;
                    }
                    literal.extend(chars.get(i));
                    i += 1;
                }
                out.push((start_line, literal));
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// `code` with the insides of string literals and comments blanked, lines kept.
fn string_literals_blanked(code: &str) -> String {
    let mut out = String::new();
    let mut in_string = false;
    let mut escaped = false;
    for text in code.lines() {
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            if in_string {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == '"' {
                    in_string = false;
                    out.push('"');
                }
                continue;
            }
            if c == '/' && chars.peek() == Some(&'/') {
                break;
            }
            if c == '\'' && chars.peek() == Some(&'"') {
                // The character literal '"'.
                out.push(c);
                out.extend(chars.next());
                continue;
            }
            if c == '"' {
                in_string = true;
            }
            out.push(c);
        }
        out.push('\n');
    }
    out
}

/// Every controller source file but the tests, relative to `src/controller`.
fn controller_sources() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/controller");
    let mut files = Vec::new();
    let mut dirs: Vec<PathBuf> = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("a directory entry").path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if path.is_dir() && name != "tests" {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") && name != "tests.rs" {
                let text = std::fs::read_to_string(&path).expect("readable");
                // Inline test modules come last in a file.
                let code = text
                    .split("#[cfg(test)]")
                    .next()
                    .unwrap_or_default()
                    .to_string();
                let relative = path.strip_prefix(&root).expect("under root");
                files.push((relative.display().to_string(), code));
            }
        }
    }
    files.sort();
    files
}

#[test]
fn no_reason_is_spelled_as_a_string_outside_this_module() {
    let sources = controller_sources();
    assert!(
        sources.iter().any(|(f, _)| f == "decide/run.rs"),
        "the scan sees the decision core: {:?}",
        sources.iter().map(|s| &s.0).collect::<Vec<_>>()
    );
    let found: Vec<String> = sources
        .iter()
        .flat_map(|(file, code)| reasons_spelled_as_strings(file, code))
        .collect();
    assert!(
        found.is_empty(),
        "add the reason to controller::reason::Reason (and the README table) instead:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_scan_catches_what_it_is_meant_to() {
    let caught = |code: &str| !reasons_spelled_as_strings("decide/run.rs", code).is_empty();
    // Regressions the scan must catch.
    assert!(caught(r#"let r = "WaitingForTasks";"#));
    assert!(caught(r#"reason: "NodeNotReady".into(),"#));
    assert!(caught(
        r#"reason: format!("WaitingFor{}", held.predicate),"#
    ));
    assert!(caught(r#"let r = format!("{}{}", "Waiting", name);"#));
    assert!(caught("struct Stop {\n    reason: String,\n}"));
    assert!(caught("fn event(reason: &str) {}"));
    assert!(caught("fn event(reason : & 'static str) {}"));
    assert!(caught("fn event(id: u32, reason: Option<String>) {}"));
    assert!(!caught(
        "struct Exit {\n    kubelet_reason: Option<String>,\n}"
    ));
    assert!(caught("if up.state == \"Done\" {}"));
    assert!(caught(
        r#"matches!(step.action.as_str(), "drain" | "wait-tasks")"#
    ));
    assert!(caught(
        r#"up.strategy.as_deref() == Some("stop-the-world")"#
    ));
    // What it must let through: messages, comments, character literals, allowed words.
    assert!(!caught(r#"format!("node {name} is not ready: {}", r)"#));
    assert!(!caught("// the reason is \"NodeNotReady\"\nlet c = '\"';"));
    assert!(!caught(r#"let c = '"'; let s = "Upgrading {} -> {}";"#));
    assert!(!caught(
        r#"let s = "POD_NAME"; let t = "octopus-operator";"#
    ));
    assert!(
        reasons_spelled_as_strings("observe.rs", r#"c.type_ == "Ready""#).is_empty(),
        "an allowed word in its file"
    );
    assert!(
        !reasons_spelled_as_strings("decide/run.rs", r#"c.type_ == "Ready""#).is_empty(),
        "an allowed word elsewhere"
    );
}
