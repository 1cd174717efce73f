//! Style checked by a test: what we ban in the sources, found by grep, not by memory.
//! (`cargo fmt --check` and clippy run from `scripts/test`.) Among them: blocking
//! file-system calls in the storage, shard and Kafka crates, which go through
//! `tidewater_io::fs` (the exceptions are listed below, each with its reason).

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
/// Every directory of Rust sources the checks read.
const SOURCE_DIRS: [&str; 6] = [
    "src",
    "io/src",
    "shards/src",
    "kafka/src",
    "tools/src",
    "registry/src",
];

fn production_part(text: &str) -> &str {
    text.split("#[cfg(test)]").next().unwrap_or("")
}

#[test]
fn banned_patterns_are_absent() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in SOURCE_DIRS {
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

/// Where the storage, shard and Kafka crates may name `std::fs`: the one module that
/// decides how file-system calls stay off a serving core.
const STD_FS_ALLOWED: &[(&str, &str)] = &[
    (
        "io/src/fs.rs",
        "the fs module: runs the calls on the executor's blocking thread",
    ),
    (
        "io/src/fs/blocking.rs",
        "the fs module's blocking calls, for code that runs before a core serves",
    ),
];

/// Files that call `tidewater_io::fs::blocking`, which blocks whatever thread runs
/// it; each says why it cannot await the async calls.
const FS_BLOCKING_ALLOWED: &[(&str, &str)] = &[
    (
        "io/src/fs.rs",
        "the async calls hand the blocking ones to the executor's blocking thread",
    ),
    (
        "io/src/ledger/files.rs",
        "ShardLog::create_partition is synchronous: the Kafka front end calls it",
    ),
    (
        "kafka/src/shared_file.rs",
        "SharedFile::open runs before any core serves (and on the command line); a change on a core runs on the executor's blocking thread (SharedFile::change)",
    ),
    (
        "kafka/src/topics_file.rs",
        "read_at_start: serve reads topics.json once before any executor runs",
    ),
    (
        "shards/src/pipeline/checkpoint.rs",
        "start-up reads and the rescale's writes, before any core serves",
    ),
    (
        "shards/src/pipeline/spec.rs",
        "a job's schema is read while the configuration loads, on no executor",
    ),
    (
        "shards/src/sink/mod.rs",
        "a file sink opens its file while its job starts, before the core serves",
    ),
];

/// Path methods that call the file system (a `stat`, a directory read).
const PATH_FS_CALLS: &[&str] = &[
    ".exists()",
    ".try_exists(",
    ".is_file()",
    ".is_dir()",
    ".is_symlink()",
    ".metadata()",
    ".symlink_metadata()",
    ".canonicalize()",
    ".read_dir()",
    ".read_link()",
];

/// Whether `line` calls `call` itself, not a longer name ending in it
/// (`File::open(` but not `DmaFile::open(`).
fn called(line: &str, call: &str) -> bool {
    line.match_indices(call).any(|(at, _)| {
        !line[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_')
    })
}

/// Blocking file-system calls in the non-test part of `text`, the file at `rel`
/// (relative to the repository, `/`-separated).
fn fs_problems(rel: &str, text: &str) -> Vec<String> {
    let prod = production_part(text);
    let mut problems = Vec::new();
    let std_fs_allowed = STD_FS_ALLOWED.iter().any(|(f, _)| *f == rel);
    let lines: Vec<&str> = prod.lines().collect();
    for (n, line) in lines.iter().enumerate() {
        if line.trim_start().starts_with("//") || std_fs_allowed {
            continue;
        }
        let mut why = None;
        if line.contains("std::fs") {
            why = Some("`std::fs` blocks the core: use tidewater_io::fs");
        } else if PATH_FS_CALLS.iter().any(|c| line.contains(c)) {
            why = Some("a Path method that calls the file system: use tidewater_io::fs");
        } else if line.contains("fs::File::")
            || called(line, "File::create(")
            || called(line, "File::open(")
        {
            why = Some("opening a std::fs::File blocks the core: use tidewater_io::fs");
        }
        if let Some(why) = why {
            problems.push(format!("{rel}:{}: {why}: {}", n + 1, line.trim()));
        }
    }
    // `use std::{fs, ...}` (on one line or several).
    if !std_fs_allowed {
        let mut rest = prod;
        while let Some(at) = rest.find("std::{") {
            let group = &rest[at + 6..];
            let group = &group[..group.find('}').unwrap_or(group.len())];
            if group.split(',').any(|item| {
                let item = item.trim();
                item == "fs" || item.starts_with("fs::") || item.starts_with("fs as ")
            }) {
                let line = prod[..prod.len() - rest.len() + at].lines().count().max(1);
                problems.push(format!(
                    "{rel}:{line}: `std::fs` imported in a group: use tidewater_io::fs"
                ));
            }
            rest = &rest[at + 6..];
        }
    }
    let uses_blocking = prod.lines().enumerate().find(|(_, l)| {
        !l.trim_start().starts_with("//")
            && (l.contains("fs::blocking") || l.contains("fs::{") && l.contains("blocking"))
    });
    let blocking_allowed = FS_BLOCKING_ALLOWED.iter().any(|(f, _)| *f == rel);
    if let (Some((n, line)), false) = (uses_blocking, blocking_allowed) {
        problems.push(format!(
            "{rel}:{}: fs::blocking blocks the core: await tidewater_io::fs, or list the file in FS_BLOCKING_ALLOWED with why: {}",
            n + 1,
            line.trim()
        ));
    }
    if uses_blocking.is_none() && blocking_allowed && rel != "io/src/fs.rs" {
        problems.push(format!(
            "{rel}: listed in FS_BLOCKING_ALLOWED but calls no fs::blocking: take it off the list"
        ));
    }
    problems
}

#[test]
fn file_system_calls_stay_off_the_core() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ["io/src", "shards/src", "kafka/src", "registry/src"] {
        sources(&root.join(dir), &mut files);
    }
    assert!(files.len() > 5, "found the sources");
    let mut problems = Vec::new();
    for f in &files {
        let rel = f
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        let text = std::fs::read_to_string(f).unwrap();
        problems.extend(fs_problems(&rel, &text));
    }
    for (f, _) in STD_FS_ALLOWED.iter().chain(FS_BLOCKING_ALLOWED) {
        if !root.join(f).is_file() {
            problems.push(format!("{f}: allowed, but there is no such file"));
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn the_file_system_check_finds_what_it_bans() {
    let found = |rel: &str, text: &str| fs_problems(rel, text).len();
    let write = "io/src/ledger/write.rs";
    assert_eq!(found(write, "fn f() { std::fs::remove_file(p); }"), 1);
    assert_eq!(found(write, "use std::fs::File;"), 1);
    assert_eq!(found(write, "use std::{\n    fs,\n    io,\n};"), 1);
    assert_eq!(found(write, "if dir.join(META).exists() {}"), 1);
    assert_eq!(found(write, "use crate::fs::{self, blocking};"), 1);
    assert_eq!(found(write, "let f = File::create(&tmp)?;"), 1);
    assert_eq!(found(write, "let f = tidewater_io::fs::File::open(p)?;"), 1);
    assert_eq!(found(write, "let f = DmaFile::open(&path).await?;"), 0);
    assert_eq!(found(write, "// std::fs in a comment"), 0);
    let tests_only = "#[cfg(test)]\nmod tests { fn t() { std::fs::write(p, b).unwrap(); } }";
    assert_eq!(found(write, tests_only), 0);
    // Listed files may call fs::blocking, and must.
    let files = "io/src/ledger/files.rs";
    assert_eq!(found(files, "use crate::fs::{self, blocking};"), 0);
    assert_eq!(found(files, "fn f() {}"), 1);
    let shards = "shards/src/pipeline/window.rs";
    assert_eq!(found(shards, "tidewater_io::fs::blocking::read(p)"), 1);
    assert_eq!(found("io/src/fs/blocking.rs", "use std::fs::File;"), 0);
}

/// The module a file of `kafka/src` is (`handlers/fetch.rs`: `handlers::fetch`).
fn module_of(rel: &str) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .trim_end_matches(".rs")
        .split('/')
        .map(String::from)
        .collect();
    if parts.last().is_some_and(|p| p == "lib" || p == "mod") {
        parts.pop();
    }
    parts
}

/// The crate's own modules that `text` (the file of module `me`) names: `crate::a::b`,
/// `super::x`, and the items of `crate::{a, b::c}` groups, each resolved to the
/// longest prefix that is one of `modules`. The crate root (re-exports only) is left
/// out.
fn modules_used(me: &[String], text: &str, modules: &[Vec<String>]) -> Vec<Vec<String>> {
    let code: String = production_part(text)
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let resolve = |path: Vec<String>| {
        (1..=path.len())
            .rev()
            .map(|n| path[..n].to_vec())
            .find(|p| modules.contains(p))
    };
    let mut used = Vec::new();
    for root in ["crate::", "super::"] {
        for (at, _) in code.match_indices(root) {
            let before = code[..at].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue; // part of a longer path (`a::crate::`, `super::super::`)
            }
            let rest = &code[at..];
            let path_end = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(rest.len());
            let mut segments = rest[..path_end].split("::").filter(|s| !s.is_empty());
            let mut prefix = Vec::new();
            if segments.next() == Some("super") {
                prefix = me.to_vec();
                prefix.pop();
            }
            for s in segments {
                if s == "super" {
                    prefix.pop();
                } else {
                    prefix.push(s.to_string());
                }
            }
            let items = match rest[path_end..].strip_prefix('{') {
                Some(group) => group[..group.find('}').unwrap_or(group.len())]
                    .split(',')
                    .map(|item| item.trim().split(" as ").next().unwrap_or("").to_string())
                    .filter(|item| !item.is_empty() && item != "self")
                    .collect(),
                None => vec![String::new()],
            };
            for item in items {
                let mut path = prefix.clone();
                path.extend(item.split("::").filter(|s| !s.is_empty()).map(String::from));
                if let Some(m) = resolve(path) {
                    if !m.is_empty() && m != me && !used.contains(&m) {
                        used.push(m);
                    }
                }
            }
        }
    }
    used
}

/// A loop among the files of `uses` (file -> the files it uses), if there is one.
fn import_loop(uses: &[(Vec<String>, Vec<Vec<String>>)]) -> Option<Vec<Vec<String>>> {
    fn visit(
        at: &Vec<String>,
        uses: &[(Vec<String>, Vec<Vec<String>>)],
        path: &mut Vec<Vec<String>>,
        done: &mut Vec<Vec<String>>,
    ) -> Option<Vec<Vec<String>>> {
        if let Some(start) = path.iter().position(|p| p == at) {
            let mut found = path[start..].to_vec();
            found.push(at.clone());
            return Some(found);
        }
        if done.contains(at) {
            return None;
        }
        path.push(at.clone());
        for next in uses.iter().filter(|(m, _)| m == at).flat_map(|(_, u)| u) {
            if let Some(found) = visit(next, uses, path, done) {
                return Some(found);
            }
        }
        path.pop();
        done.push(at.clone());
        None
    }
    let mut done = Vec::new();
    uses.iter()
        .find_map(|(m, _)| visit(m, uses, &mut Vec::new(), &mut done))
}

#[test]
fn kafka_files_use_each_other_one_way_only() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("kafka/src");
    let mut files = Vec::new();
    sources(&root, &mut files);
    assert!(files.len() > 10, "found the sources");
    let rel = |f: &PathBuf| {
        f.strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/")
    };
    let modules: Vec<Vec<String>> = files.iter().map(|f| module_of(&rel(f))).collect();
    let uses: Vec<(Vec<String>, Vec<Vec<String>>)> = files
        .iter()
        .zip(&modules)
        .map(|(f, m)| {
            (
                m.clone(),
                modules_used(m, &std::fs::read_to_string(f).unwrap(), &modules),
            )
        })
        .collect();
    let connection = uses.iter().find(|(m, _)| m == &["connection"]).unwrap();
    assert!(
        connection.1.contains(&vec!["broker".to_string()]),
        "the check sees uses"
    );
    if let Some(found) = import_loop(&uses) {
        let names: Vec<String> = found.iter().map(|m| m.join("::")).collect();
        panic!(
            "kafka/src files use each other in a loop: {}",
            names.join(" -> ")
        );
    }
}

#[test]
fn the_loop_check_finds_a_loop() {
    let modules: Vec<Vec<String>> = [vec!["a"], vec!["b"], vec!["h"], vec!["h", "c"]]
        .iter()
        .map(|m| m.iter().map(|s| s.to_string()).collect())
        .collect();
    let m = |s: &str| s.split("::").map(String::from).collect::<Vec<_>>();
    let used = |me: &str, text: &str| modules_used(&m(me), text, &modules);
    assert_eq!(
        used("a", "use crate::h::{c, self};\nfn f() { crate::b::g() }"),
        [m("h::c"), m("b")]
    );
    assert_eq!(used("h::c", "use super::super::a;"), [m("a")]);
    assert_eq!(
        used("h::c", "use super::c; // crate::a"),
        Vec::<Vec<String>>::new()
    );
    let a_b = vec![
        (m("a"), vec![m("b")]),
        (m("b"), vec![m("h::c")]),
        (m("h::c"), vec![m("a")]),
    ];
    assert_eq!(
        import_loop(&a_b),
        Some(vec![m("a"), m("b"), m("h::c"), m("a")])
    );
    assert_eq!(import_loop(&a_b[..2]), None);
}

/// Longest function body (in lines, signature to closing brace) outside tests.
const FN_LINES_MAX: usize = 150;
/// Functions longer than this are listed (not failed) so they get split before
/// they grow past the limit.
const FN_LINES_WARN: usize = 70;
/// Functions allowed past the limit: (file, function, why).
const FN_LINES_ALLOWED: &[(&str, &str, &str)] = &[(
    "src/metrics.rs",
    "new",
    "one registration per metric, in the order /metrics lists them: a table, no logic",
)];

/// Blanks out comments, string and char literals (keeping line breaks), so that
/// braces inside them are not counted.
fn code_only(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let blank = |out: &mut Vec<u8>, s: &[u8]| {
        out.extend(s.iter().map(|&c| if c == b'\n' { b'\n' } else { b' ' }));
    };
    let mut i = 0;
    while i < b.len() {
        let rest = &b[i..];
        let ident_before = i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_');
        let end = if rest.starts_with(b"//") {
            rest.iter().position(|&c| c == b'\n').unwrap_or(rest.len())
        } else if rest.starts_with(b"/*") {
            rest.windows(2)
                .position(|w| w == b"*/")
                .map_or(rest.len(), |p| p + 2)
        } else if !ident_before
            && (rest.starts_with(b"r#") || rest.starts_with(b"r\"") || rest.starts_with(b"br"))
        {
            // A raw string: r"..", r#".."#, br#".."#.
            let start = if rest[0] == b'b' { 1 } else { 0 };
            let hashes = rest[start + 1..].iter().take_while(|&&c| c == b'#').count();
            if rest.get(start + 1 + hashes) != Some(&b'"') {
                0
            } else {
                let mut close = vec![b'"'];
                close.extend(std::iter::repeat_n(b'#', hashes));
                let body = start + 2 + hashes;
                rest[body..]
                    .windows(close.len())
                    .position(|w| w == close.as_slice())
                    .map_or(rest.len(), |p| body + p + close.len())
            }
        } else if rest[0] == b'"' {
            let mut j = 1;
            while j < rest.len() && rest[j] != b'"' {
                j += if rest[j] == b'\\' { 2 } else { 1 };
            }
            (j + 1).min(rest.len())
        } else if rest[0] == b'\'' {
            // A char literal ('{', '\n', '\u{7b}'), not a lifetime ('a).
            match rest.get(1) {
                Some(b'\\') => rest[2..]
                    .iter()
                    .position(|&c| c == b'\'')
                    .map_or(0, |p| p + 3),
                Some(_) if rest.get(2) == Some(&b'\'') => 3,
                _ => 0,
            }
        } else {
            0
        };
        if end == 0 {
            out.push(b[i]);
            i += 1;
        } else {
            blank(&mut out, &rest[..end]);
            i += end;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// (name, first line, lines) of every function with a body in `src`.
fn function_lengths(src: &str) -> Vec<(String, usize, usize)> {
    let code = code_only(src);
    let b = code.as_bytes();
    let mut found = Vec::new();
    let mut at = 0;
    while let Some(p) = code[at..].find("fn ") {
        let start = at + p;
        at = start + 3;
        if start > 0 && (b[start - 1].is_ascii_alphanumeric() || b[start - 1] == b'_') {
            continue;
        }
        let name: String = code[at..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if name.is_empty() {
            continue; // `fn(` as a type
        }
        // The body opens at the first `{` before any `;` (a declaration has none).
        let Some(open) = code[at..].find(['{', ';']).map(|o| at + o) else {
            break;
        };
        if b[open] == b';' {
            continue;
        }
        let mut depth = 0usize;
        let mut close = open;
        for (k, &c) in b[open..].iter().enumerate() {
            match c {
                b'{' => depth += 1,
                b'}' => {
                    depth -= 1;
                    if depth == 0 {
                        close = open + k;
                        break;
                    }
                }
                _ => {}
            }
        }
        let line = code[..start].matches('\n').count() + 1;
        let lines = code[start..=close].matches('\n').count() + 1;
        found.push((name, line, lines));
    }
    found
}

#[test]
fn no_function_is_longer_than_the_limit() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in SOURCE_DIRS {
        sources(&root.join(dir), &mut files);
    }
    let (mut long, mut too_long) = (Vec::new(), Vec::new());
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let rel = f.strip_prefix(root).unwrap().display().to_string();
        for (name, line, lines) in function_lengths(production_part(&text)) {
            let at = format!("{rel}:{line} {name}: {lines} lines");
            let allowed = FN_LINES_ALLOWED
                .iter()
                .any(|&(file, f, _)| file == rel && f == name);
            if lines > FN_LINES_MAX && !allowed {
                too_long.push(at);
            } else if lines > FN_LINES_WARN {
                long.push(at);
            }
        }
    }
    if !long.is_empty() {
        println!(
            "functions over {FN_LINES_WARN} lines (split them before they pass {FN_LINES_MAX}):\n  {}",
            long.join("\n  ")
        );
    }
    assert!(
        too_long.is_empty(),
        "functions over {FN_LINES_MAX} lines: split them into named steps:\n  {}",
        too_long.join("\n  ")
    );
}

#[test]
fn the_length_check_counts_bodies_not_braces_in_text() {
    let src = r##"
/// A doc with a { brace.
pub async fn short(x: u8) -> u8 {
    let s = "{ not a block";
    let r = r#"}}}"#;
    let c = '{';
    x
}

trait T {
    fn declared(&self);
}

fn long<'a>(v: &'a [u8]) -> usize {
    let f: fn(u8) -> u8 = |x| x; // fn( is a type, { in a comment
    /* { */
    v.len()
}
"##;
    let got = function_lengths(src);
    assert_eq!(
        got,
        vec![("short".to_string(), 3, 6), ("long".to_string(), 14, 5)],
        "{got:?}"
    );
}
