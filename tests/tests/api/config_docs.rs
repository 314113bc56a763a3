//! `docs/configuration.md` documents exactly the variables the code reads: every name the
//! configuration reader takes (the string literals of `jobs/src/platform/config/`), every
//! `std::env::var` of the three crates, and `RUST_LOG` where the log filter reads it. A
//! variable added without a line in the docs fails here, and so does a documented variable
//! that nothing reads any more.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn is_variable_name(s: &str) -> bool {
    s.len() >= 3
        && s.starts_with(|c: char| c.is_ascii_uppercase())
        && s.chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// The contents of every string literal in `src` that follows `prefix` (`""` for all).
fn literals_after<'a>(src: &'a str, prefix: &str) -> Vec<&'a str> {
    let needle = format!("{prefix}\"");
    src.match_indices(&needle)
        .filter_map(|(at, _)| {
            let rest = &src[at + needle.len()..];
            rest.find('"').map(|end| &rest[..end])
        })
        .collect()
}

/// Every variable name the code reads.
fn read_by_code() -> BTreeSet<String> {
    let root = root();
    let mut names = BTreeSet::new();
    let mut config = Vec::new();
    rust_files(&root.join("jobs/src/platform/config"), &mut config);
    for file in &config {
        let src = std::fs::read_to_string(file).expect("read config source");
        names.extend(
            literals_after(&src, "")
                .into_iter()
                .filter(|s| is_variable_name(s))
                .map(str::to_string),
        );
    }
    let mut all = Vec::new();
    for krate in ["api/src", "jobs/src", "worker/src"] {
        rust_files(&root.join(krate), &mut all);
    }
    for file in &all {
        let src = std::fs::read_to_string(file).expect("read source");
        for prefix in ["env::var(", "env::var_os("] {
            names.extend(literals_after(&src, prefix).into_iter().map(str::to_string));
        }
        if src.contains("EnvFilter::try_from_default_env") || src.contains("from_default_env()") {
            names.insert("RUST_LOG".into());
        }
    }
    names
}

/// Every variable `docs/configuration.md` documents: the rows whose first cell is `` `NAME` ``.
fn documented() -> BTreeSet<String> {
    let path = root().join("docs/configuration.md");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|rest| rest.split_once('`').map(|(name, _)| name.to_string()))
        .filter(|name| is_variable_name(name))
        .collect()
}

#[test]
fn every_variable_the_code_reads_is_documented_and_every_documented_one_is_read() {
    let code = read_by_code();
    let docs = documented();
    // The scan itself must see the configuration: a few names it cannot miss.
    for sure in [
        "DATABASE_URL",
        "STRIPE_WEBHOOK_SECRET",
        "APP_ENV",
        "RUST_LOG",
    ] {
        assert!(
            code.contains(sure),
            "the source scan missed {sure}: {code:?}"
        );
    }
    let undocumented: Vec<_> = code.difference(&docs).collect();
    let stale: Vec<_> = docs.difference(&code).collect();
    assert!(
        undocumented.is_empty(),
        "read by the code but not in docs/configuration.md: {undocumented:?}"
    );
    assert!(
        stale.is_empty(),
        "documented in docs/configuration.md but read nowhere: {stale:?}"
    );
}

#[test]
fn the_scanner_finds_literals_only_after_their_prefix() {
    let src = r#"let a = std::env::var("ONE"); r.flag("TWO", false); "three""#;
    assert_eq!(literals_after(src, "env::var("), vec!["ONE"]);
    assert!(is_variable_name("TWO") && !is_variable_name("three") && !is_variable_name("T"));
}
