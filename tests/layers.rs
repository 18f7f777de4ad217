//! The layers import downwards only, and the planner sees nothing but specs and
//! observed data: a module that reaches up (a driver into the planner, the
//! planner into a driver, the runtime into the command line) fails here, before it
//! becomes a circle.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// What each top-level module of the crate may name with `crate::`, besides itself.
const ALLOWED: &[(&str, &[&str])] = &[
    ("errors", &[]),
    ("spec", &["errors"]),
    ("observed", &["errors", "spec"]),
    ("drivers", &["errors", "observed", "spec"]),
    ("observe", &["drivers", "errors", "observed", "spec"]),
    // The planner is a pure function of specs and observations.
    ("plan", &["observed", "spec"]),
    ("clock", &["plan"]),
    (
        "execute",
        &["drivers", "errors", "observed", "plan", "spec"],
    ),
    (
        "reconcile",
        &[
            "drivers", "errors", "execute", "observe", "observed", "plan", "spec",
        ],
    ),
    // Fleet mode's etcd side: below the runtime, which asks it whether a step
    // may start; it knows nothing of plans, steps or drivers.
    ("fleet", &["errors"]),
    (
        "runtime",
        &[
            "clock",
            "drivers",
            "errors",
            "fleet",
            "observed",
            "plan",
            "reconcile",
            "spec",
        ],
    ),
    ("cli", &[]),
];

fn source_files(path: &Path) -> Vec<PathBuf> {
    if path.is_file() {
        return vec![path.to_path_buf()];
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).unwrap() {
        files.extend(source_files(&entry.unwrap().path()));
    }
    files
}

/// The top-level modules a file names as `crate::NAME`, comments left out.
fn named_modules(file: &Path) -> BTreeSet<String> {
    let text = std::fs::read_to_string(file).unwrap();
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or_default();
        for rest in code.split("crate::").skip(1) {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                names.insert(name);
            }
        }
    }
    names
}

#[test]
fn every_layer_imports_only_what_lies_below_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("reconciler");
    let mut wrong = Vec::new();
    for (module, allowed) in ALLOWED {
        let dir = root.join(module);
        let path = if dir.is_dir() {
            dir
        } else {
            root.join(format!("{module}.rs"))
        };
        assert!(path.exists(), "no module {module}");
        for file in source_files(&path) {
            for name in named_modules(&file) {
                if name != *module && !allowed.contains(&name.as_str()) {
                    wrong.push(format!(
                        "{} names crate::{name}",
                        file.strip_prefix(&root).unwrap().display()
                    ));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "imports against the layering: {wrong:#?}");
}
