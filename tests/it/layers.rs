//! The library's layers, kept: every `crate::`, `super::`, `self::` and child-module path in
//! src/ (in `use` trees, grouped or not, and in code) is resolved to the file that defines the
//! module it names, and an import may not run up a layer nor close a circle between files.
//! (rust-analyzer keeps its architecture the same way, in xtask/src/tidy.rs.)
//!
//! Layers, lowest first (README "Layout" and src/lib.rs say the same):
//! the leaves (`error`, `wire`, `platform`, `lockfile`, `shell`, `config_file`, `http_guard`,
//! `http_accept`, `auth`, `version`, `update`) → `protocol` → `jobs`, `tree` → `daemon`, `remote` →
//! `codex_remote` → `src/bin` (not scanned: the binaries see only the library's public items).
//! Inside a layer a module group may import a sideways one, as long as no circle forms.
//!
//! Circles are counted between files. A module's use of the modules it contains (`daemon/mod.rs`
//! naming `config::DaemonConfig`) is part of that module, not an arrow; a child's import of its
//! parent (`super::home_dir` in `daemon/config.rs`) is one, so a circle through the parent shows.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};

/// Module groups (the first segment below `crate::`) by layer, lowest first.
const LAYERS: &[&[&str]] = &[
    &[
        "error",
        "wire",
        "platform",
        "lockfile",
        "shell",
        "config_file",
        "http_guard",
        "http_accept",
        "auth",
        "version",
        "update",
    ],
    &["protocol"],
    &["jobs", "tree"],
    &["daemon", "remote"],
    &["codex_remote", "fuzzing"],
];

/// One import: `file:line` names a path that resolves into the module defined by `target`.
#[derive(Clone, Debug)]
struct Import {
    from: String,
    file: String,
    line: usize,
    path: String,
    target: String,
}

/// A module path (`jobs::store`, `` for the crate root) for every file of the library.
fn module_files(src: &Path) -> BTreeMap<String, String> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("read src dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n != "bin") {
                    walk(&path, out);
                }
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(src, &mut files);
    let mut modules = BTreeMap::new();
    for file in files {
        let rel = file.strip_prefix(src).expect("under src");
        let rel_text = rel.to_string_lossy().replace('\\', "/");
        let mut segments: Vec<String> =
            rel_text.trim_end_matches(".rs").split('/').map(str::to_owned).collect();
        if segments.last().is_some_and(|s| s == "mod" || s == "lib") {
            segments.pop();
        }
        modules.insert(segments.join("::"), format!("src/{rel_text}"));
    }
    modules
}

/// The text with comments, string and char literals blanked out (newlines kept, so lines count).
fn code_only(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
        } else if (c == 'r' || c == 'b')
            && !chars.get(i.wrapping_sub(1)).is_some_and(|p| p.is_alphanumeric() || *p == '_')
            && raw_string_hashes(&chars[i..]).is_some()
        {
            // r"…", r#"…"#, br#"…"#: no escapes, ends at a quote followed by the same hashes.
            let (skip, hashes) = raw_string_hashes(&chars[i..]).expect("checked");
            for _ in 0..skip {
                out.push(' ');
            }
            i += skip;
            while i < chars.len() {
                if chars[i] == '"' && (1..=hashes).all(|k| chars.get(i + k) == Some(&'#')) {
                    for _ in 0..=hashes {
                        out.push(' ');
                    }
                    i += hashes + 1;
                    break;
                }
                out.push(blank(chars[i]));
                i += 1;
            }
        } else if c == '"' {
            out.push(' ');
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                if i < chars.len() {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
            out.push(' ');
            i += 1;
        } else if c == '\'' && next == Some('\\') {
            // '\n', '\'', '\u{7f}'
            out.push_str("  ");
            i += 2;
            while i < chars.len() && chars[i] != '\'' {
                out.push(' ');
                i += 1;
            }
            out.push(' ');
            i += 1;
        } else if c == '\'' && chars.get(i + 2) == Some(&'\'') {
            out.push_str("   ");
            i += 3;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// For a raw string start (`r"`, `r#"`, `br##"` …): how many chars open it, and its hash count.
fn raw_string_hashes(chars: &[char]) -> Option<(usize, usize)> {
    let mut i = usize::from(chars.first() == Some(&'b'));
    if chars.get(i) != Some(&'r') {
        return None;
    }
    i += 1;
    let mut hashes = 0;
    while chars.get(i) == Some(&'#') {
        hashes += 1;
        i += 1;
    }
    (chars.get(i) == Some(&'"')).then_some((i + 1, hashes))
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    PathSep,
    Punct(char),
}

fn tokens(code: &str) -> Vec<(Tok, usize)> {
    let chars: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let mut line = 1;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push((Tok::Ident(chars[start..i].iter().collect()), line));
        } else if c.is_ascii_digit() {
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
        } else if c == ':' && chars.get(i + 1) == Some(&':') {
            out.push((Tok::PathSep, line));
            i += 2;
        } else {
            out.push((Tok::Punct(c), line));
            i += 1;
        }
    }
    out
}

/// Every path a file names that may lead into the crate, with its line and the logical module
/// (file module plus inline `mod x { … }` blocks) it is written in.
fn paths_in(code: &str, file_module: &[String]) -> Vec<(Vec<String>, usize, Vec<String>)> {
    let toks = tokens(code);
    let ident = |i: usize| match toks.get(i) {
        Some((Tok::Ident(s), _)) => Some(s.as_str()),
        _ => None,
    };
    let is = |i: usize, t: &Tok| toks.get(i).is_some_and(|(k, _)| k == t);
    let mut out = Vec::new();
    let mut depth = 0usize;
    // inline modules: (name, brace depth inside it)
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        let logical: Vec<String> =
            file_module.iter().cloned().chain(inline.iter().map(|(n, _)| n.clone())).collect();
        match &toks[i].0 {
            Tok::Punct('{') => {
                depth += 1;
                i += 1;
            }
            Tok::Punct('}') => {
                depth = depth.saturating_sub(1);
                if inline.last().is_some_and(|(_, d)| *d > depth) {
                    inline.pop();
                }
                i += 1;
            }
            Tok::Ident(word) if word == "mod" && is(i + 2, &Tok::Punct('{')) => {
                if let Some(name) = ident(i + 1) {
                    inline.push((name.to_owned(), depth + 1));
                }
                depth += 1;
                i += 3;
            }
            Tok::Ident(word) if word == "use" && !(i > 0 && is(i - 1, &Tok::PathSep)) => {
                let mut j = i + 1;
                let mut found = Vec::new();
                use_tree(&toks, &mut j, Vec::new(), &mut found);
                for (path, line) in found {
                    out.push((path, line, logical.clone()));
                }
                i = j;
            }
            Tok::Ident(_) if is(i + 1, &Tok::PathSep) && !(i > 0 && is(i - 1, &Tok::PathSep)) => {
                let line = toks[i].1;
                let mut path = vec![ident(i).expect("ident").to_owned()];
                let mut j = i + 1;
                while is(j, &Tok::PathSep) {
                    match ident(j + 1) {
                        Some(next) => {
                            path.push(next.to_owned());
                            j += 2;
                        }
                        None => break,
                    }
                }
                out.push((path, line, logical.clone()));
                i = j;
            }
            _ => i += 1,
        }
    }
    out
}

/// Expand one `use` tree (`a::b`, `a::{b, c::d}`, `a::*`, `a::{self, b}`) into full paths.
fn use_tree(
    toks: &[(Tok, usize)],
    i: &mut usize,
    prefix: Vec<String>,
    out: &mut Vec<(Vec<String>, usize)>,
) {
    let mut path = prefix;
    loop {
        match toks.get(*i) {
            Some((Tok::Ident(word), line)) => {
                // `use a::{self}` names `a` itself
                if word != "self" || path.is_empty() {
                    path.push(word.clone());
                }
                let line = *line;
                *i += 1;
                if matches!(toks.get(*i), Some((Tok::PathSep, _))) {
                    *i += 1;
                    continue;
                }
                if matches!(toks.get(*i), Some((Tok::Ident(w), _)) if w == "as") {
                    *i += 2;
                }
                out.push((path, line));
                return;
            }
            Some((Tok::Punct('*'), line)) => {
                out.push((path, *line));
                *i += 1;
                return;
            }
            Some((Tok::Punct('{'), _)) => {
                *i += 1;
                loop {
                    match toks.get(*i) {
                        Some((Tok::Punct('}'), _)) => {
                            *i += 1;
                            return;
                        }
                        Some((Tok::Punct(','), _)) => *i += 1,
                        None => return,
                        _ => use_tree(toks, i, path.clone(), out),
                    }
                }
            }
            _ => return,
        }
    }
}

/// Resolve a path written in `logical` to the module file it reaches, if it leads into the crate.
fn resolve(
    path: &[String],
    logical: &[String],
    file_module: &[String],
    modules: &BTreeMap<String, String>,
) -> Option<String> {
    let first = path.first()?;
    let (mut base, rest): (Vec<String>, &[String]) = match first.as_str() {
        "crate" => (Vec::new(), &path[1..]),
        "self" => (logical.to_vec(), &path[1..]),
        "super" => {
            let mut base = logical.to_vec();
            let mut k = 0;
            while path.get(k).is_some_and(|s| s == "super") {
                base.pop()?;
                k += 1;
            }
            (base, &path[k..])
        }
        child => {
            // a child module of this file named without `self::` (`mod config;` … `config::X`)
            let mut as_child = file_module.to_vec();
            as_child.push(child.to_owned());
            if !modules.contains_key(&as_child.join("::")) {
                return None;
            }
            (file_module.to_vec(), path)
        }
    };
    // the longest prefix that is a file of its own
    let mut target = String::new();
    if modules.contains_key(&base.join("::")) {
        target = base.join("::");
    }
    for segment in rest {
        base.push(segment.clone());
        let key = base.join("::");
        if modules.contains_key(&key) {
            target = key;
        }
    }
    Some(target)
}

fn imports(src: &Path) -> (BTreeMap<String, String>, Vec<Import>) {
    let modules = module_files(src);
    let mut found = Vec::new();
    for (module, file) in &modules {
        let text = std::fs::read_to_string(src.join(file.trim_start_matches("src/")))
            .expect("read source");
        let file_module: Vec<String> = if module.is_empty() {
            Vec::new()
        } else {
            module.split("::").map(str::to_owned).collect()
        };
        for (path, line, logical) in paths_in(&code_only(&text), &file_module) {
            let Some(target) = resolve(&path, &logical, &file_module, &modules) else {
                continue;
            };
            // the crate root only declares modules; an import of a file by itself is no arrow
            if target.is_empty() || &target == module {
                continue;
            }
            found.push(Import {
                from: module.clone(),
                file: file.clone(),
                line,
                path: path.join("::"),
                target,
            });
        }
    }
    (modules, found)
}

fn layer_of(module: &str) -> Option<usize> {
    let group = module.split("::").next().unwrap_or_default();
    LAYERS.iter().position(|layer| layer.contains(&group))
}

/// What breaks the layers: imports that run up a layer, then each circle between files.
fn violations(src: &Path) -> Vec<String> {
    let (modules, found) = imports(src);
    let mut problems = Vec::new();
    for import in &found {
        let from = &import.from;
        match (layer_of(from), layer_of(&import.target)) {
            (Some(a), Some(b)) if b > a => problems.push(format!(
                "{}:{}: `{}` imports `{}` from a higher layer ({} is below {}); move the item \
                 down or the code up to its user",
                import.file, import.line, from, import.path, from, import.target
            )),
            (None, _) => problems.push(format!(
                "{}:{}: `{from}` is in no layer: add its group to LAYERS in tests/it/layers.rs",
                import.file, import.line
            )),
            (_, None) => problems.push(format!(
                "{}:{}: `{}` is in no layer: add its group to LAYERS in tests/it/layers.rs",
                import.file, import.line, import.target
            )),
            _ => {}
        }
    }
    // circles between files: each strongly connected set of modules, shown with one shortest loop
    let file_of = |m: &str| modules.get(m).cloned().unwrap_or_default();
    let mut edges: BTreeMap<String, BTreeMap<String, Import>> = BTreeMap::new();
    for import in found.iter().filter(|i| !is_within(&i.target, &i.from)) {
        edges
            .entry(import.from.clone())
            .or_default()
            .entry(import.target.clone())
            .or_insert_with(|| import.clone());
    }
    for circle in strongly_connected(&edges) {
        let start = circle.iter().next().expect("not empty");
        let loop_ = shortest_cycle(start, &edges).expect("a circle has a loop");
        let mut text = format!(
            "import circle between {} files ({}); one loop:",
            circle.len(),
            circle.iter().map(|m| file_of(m)).collect::<Vec<_>>().join(", ")
        );
        for import in &loop_ {
            text.push_str(&format!(
                "\n    {}:{}: `{}` -> {}",
                import.file,
                import.line,
                import.path,
                file_of(&import.target)
            ));
        }
        problems.push(text);
    }
    problems
}

/// Whether `module` is `parent` or lies inside it (`daemon::config` inside `daemon`).
fn is_within(module: &str, parent: &str) -> bool {
    parent.is_empty() || module == parent || module.starts_with(&format!("{parent}::"))
}

/// The sets of two or more modules that reach each other (Tarjan's algorithm).
fn strongly_connected(edges: &BTreeMap<String, BTreeMap<String, Import>>) -> Vec<BTreeSet<String>> {
    struct State<'a> {
        edges: &'a BTreeMap<String, BTreeMap<String, Import>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        found: Vec<BTreeSet<String>>,
    }
    fn visit<'a>(state: &mut State<'a>, node: &'a str) {
        let n = state.index.len();
        state.index.insert(node, n);
        state.low.insert(node, n);
        state.stack.push(node);
        state.on_stack.insert(node);
        for next in state.edges.get(node).into_iter().flat_map(|t| t.keys()) {
            if !state.index.contains_key(next.as_str()) {
                visit(state, next);
                let low = state.low[node].min(state.low[next.as_str()]);
                state.low.insert(node, low);
            } else if state.on_stack.contains(next.as_str()) {
                let low = state.low[node].min(state.index[next.as_str()]);
                state.low.insert(node, low);
            }
        }
        if state.low[node] == state.index[node] {
            let mut set = BTreeSet::new();
            loop {
                let member = state.stack.pop().expect("on stack");
                state.on_stack.remove(member);
                set.insert(member.to_owned());
                if member == node {
                    break;
                }
            }
            if set.len() > 1 {
                state.found.push(set);
            }
        }
    }
    let mut state = State {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for node in edges.keys() {
        if !state.index.contains_key(node.as_str()) {
            visit(&mut state, node);
        }
    }
    state.found
}

/// The shortest loop of imports from `start` back to it, if there is one.
fn shortest_cycle(
    start: &str,
    edges: &BTreeMap<String, BTreeMap<String, Import>>,
) -> Option<Vec<Import>> {
    let mut came_from: BTreeMap<String, Import> = BTreeMap::new();
    let mut queue = VecDeque::from([start.to_owned()]);
    let mut seen = BTreeSet::new();
    while let Some(node) = queue.pop_front() {
        for (next, import) in edges.get(&node).into_iter().flatten() {
            if next == start {
                let mut path = vec![import.clone()];
                let mut at = node.clone();
                while at != start {
                    let step = came_from.get(&at).expect("visited").clone();
                    at = step.from.clone();
                    path.push(step);
                }
                path.reverse();
                return Some(path);
            }
            if seen.insert(next.clone()) {
                came_from.insert(next.clone(), import.clone());
                queue.push_back(next.clone());
            }
        }
    }
    None
}

#[test]
fn imports_respect_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let problems = violations(&src);
    assert!(
        problems.is_empty(),
        "{} import(s) break the layers (see tests/it/layers.rs):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

/// The scanner itself: grouped `use`, `super::` from inline modules, paths in code, and text in
/// comments and strings that must not count.
#[test]
fn layer_scanner_reads_paths_as_rustc_would() {
    let code = code_only(
        "use crate::{a, b::c as d};\n\
         // use crate::ignored;\n\
         let s = \"crate::also_ignored\"; let c = '\"'; let r = r#\"crate::raw\"#;\n\
         mod tests { use super::*; fn f() { super::super::x::y(); } }\n\
         fn g() { child::z(); crate::e::f::<u8>(); }\n",
    );
    let module = vec!["m".to_owned()];
    let paths: Vec<(String, usize, String)> = paths_in(&code, &module)
        .into_iter()
        .map(|(p, line, logical)| (p.join("::"), line, logical.join("::")))
        .collect();
    let want = [
        ("crate::a", 1, "m"),
        ("crate::b::c", 1, "m"),
        ("super", 4, "m::tests"),
        ("super::super::x::y", 4, "m::tests"),
        ("child::z", 5, "m"),
        ("crate::e::f", 5, "m"),
    ];
    let want: Vec<(String, usize, String)> =
        want.iter().map(|(p, l, m)| (p.to_string(), *l, m.to_string())).collect();
    assert_eq!(paths, want);
    let modules: BTreeMap<String, String> = ["", "m", "m::child", "x", "e"]
        .iter()
        .map(|m| (m.to_string(), format!("{m}.rs")))
        .collect();
    let logical = vec!["m".to_owned(), "tests".to_owned()];
    let at = |p: &str, logical: &[String]| {
        let path: Vec<String> = p.split("::").map(str::to_owned).collect();
        resolve(&path, logical, &module, &modules)
    };
    assert_eq!(at("super::super::x::y", &logical).as_deref(), Some("x"));
    assert_eq!(at("super", &logical).as_deref(), Some("m"));
    assert_eq!(at("child::z", &module).as_deref(), Some("m::child"));
    assert_eq!(at("crate::e::f", &module).as_deref(), Some("e"));
    assert_eq!(at("std::fs", &module), None);
}

/// The check itself, on a small made-up crate: an import up a layer and a circle between two
/// files are both named with their file and line; the parent using its own child is no circle.
#[test]
fn layer_check_names_upward_imports_and_circles() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    let write = |rel: &str, text: &str| {
        let path = src.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write("lib.rs", "pub mod error;\npub mod jobs;\npub mod remote;\n");
    write("error.rs", "use crate::{jobs::store::JobStore};\n");
    write("jobs/mod.rs", "pub mod store;\npub mod slurm;\nfn f() { store::open(); }\n");
    write("jobs/store.rs", "use super::slurm;\n");
    write("jobs/slurm.rs", "// use crate::remote::x;\n\nfn g() { super::store::open(); }\n");
    write("remote/mod.rs", "use crate::jobs;\n");
    let problems = violations(src).join("\n");
    assert!(problems.contains("src/error.rs:1: `error` imports `crate::jobs::store::JobStore`"));
    assert!(
        problems.contains("import circle between 2 files (src/jobs/slurm.rs, src/jobs/store.rs)")
    );
    assert!(problems.contains("src/jobs/slurm.rs:3: `super::store::open` -> src/jobs/store.rs"));
    assert!(!problems.contains("jobs/mod.rs") && !problems.contains("remote"), "{problems}");
}
