//! Style checked by a test: what we ban in the sources, found by grep, not by memory.
//! (`cargo fmt --check` and clippy run from `scripts/test`.)

use std::path::{Path, PathBuf};

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

/// The non-test part of a source file.
fn production_part(text: &str) -> &str {
    text.split("#[cfg(test)]").next().unwrap_or("")
}

#[test]
fn banned_patterns_are_absent() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ["src", "io/src", "shards/src", "tools/src"] {
        sources(&root.join(dir), &mut files);
    }
    assert!(files.len() > 5, "found the sources");
    let mut problems = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let prod = production_part(&text);
        for (what, why) in [
            ("dbg!(", "debug output left in"),
            ("todo!(", "unfinished code"),
            ("unimplemented!(", "unfinished code"),
            ("FIXME", "a known defect without an issue"),
            ("unbounded(", "every queue has a bound"),
            (
                ".unwrap()",
                "no unwrap outside tests: return an error or expect() an invariant",
            ),
        ] {
            for (n, line) in prod.lines().enumerate() {
                if line.contains(what) && !line.trim_start().starts_with("//") {
                    problems.push(format!("{}:{}: {why}: {}", f.display(), n + 1, line.trim()));
                }
            }
        }
        for (n, line) in text.lines().enumerate() {
            if line.contains("unsafe ")
                && !text
                    .lines()
                    .nth(n.saturating_sub(1))
                    .unwrap_or("")
                    .contains("SAFETY:")
            {
                problems.push(format!(
                    "{}:{}: unsafe without a SAFETY comment",
                    f.display(),
                    n + 1
                ));
            }
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}
