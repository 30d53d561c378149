//! The server's layering, checked on its source: module imports form no circle, handlers
//! never import one another, nothing below the handlers imports them, and the application
//! layer knows nothing of HTTP. A reader can then find any feature by its name in one step,
//! and a change to a handler cannot ripple back into the operations it calls.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module path (`app::tasks`, `crate` for lib.rs) → source text.
fn modules() -> BTreeMap<String, String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = BTreeMap::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.insert(
                    module_of(&src, &path),
                    std::fs::read_to_string(&path).unwrap(),
                );
            }
        }
    }
    out
}

fn module_of(src: &Path, file: &Path) -> String {
    let rel: PathBuf = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
        parts.pop();
    }
    if parts.is_empty() {
        "crate".to_owned()
    } else {
        parts.join("::")
    }
}

/// Code without comments (so prose naming a path is not an import) and without test modules.
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Expands `a::{b, c::{d, self}}` into `a::b`, `a::c::d`, `a::c`.
fn expand(tree: &str, prefix: &str, out: &mut Vec<String>) {
    let tree = tree.trim();
    if let Some(open) = tree.find('{') {
        let head = tree[..open].trim_end_matches("::");
        let inner = &tree[open + 1..tree.rfind('}').unwrap()];
        let base = join(prefix, head);
        let mut depth = 0;
        let mut start = 0;
        for (i, ch) in inner.char_indices() {
            match ch {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    expand(&inner[start..i], &base, out);
                    start = i + 1;
                }
                _ => {}
            }
        }
        expand(&inner[start..], &base, out);
    } else if !tree.is_empty() {
        let tree = tree.split(" as ").next().unwrap().trim();
        if tree == "self" {
            out.push(prefix.to_owned());
        } else {
            out.push(join(prefix, tree));
        }
    }
}

fn join(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_owned(),
        (_, true) => a.to_owned(),
        _ => format!("{a}::{b}"),
    }
}

/// Every `crate::`/`super::` path the code names, in `use` trees and inline.
fn paths(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("use ") {
        let stmt = &rest[i + 4..];
        let end = stmt.find(';').unwrap_or(stmt.len());
        let tree = stmt[..end].trim();
        if tree.starts_with("crate::") || tree.starts_with("super::") {
            expand(tree, "", &mut out);
        }
        rest = &stmt[end..];
    }
    for root in ["crate::", "super::"] {
        let mut rest = code;
        while let Some(i) = rest.find(root) {
            let tail = &rest[i..];
            let len = tail
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(tail.len());
            out.push(tail[..len].trim_end_matches(':').to_owned());
            rest = &tail[len..];
        }
    }
    out
}

/// The module a path lands in: the longest prefix that is a module.
fn resolve(from: &str, path: &str, known: &BTreeSet<String>) -> String {
    let absolute = if let Some(p) = path.strip_prefix("crate::") {
        p.to_owned()
    } else {
        let mut base: Vec<&str> = if from == "crate" {
            Vec::new()
        } else {
            from.split("::").collect()
        };
        let mut p = path;
        // A file `a/b.rs` is module `a::b`; `super` is `a`. (`mod.rs` files are named by
        // their folder, so `super` from `a` is the crate root.)
        while let Some(rest) = p.strip_prefix("super::") {
            base.pop();
            p = rest;
        }
        join(&base.join("::"), p)
    };
    let parts: Vec<&str> = absolute.split("::").collect();
    (1..=parts.len())
        .rev()
        .map(|n| parts[..n].join("::"))
        .find(|m| known.contains(m))
        .unwrap_or_else(|| "crate".to_owned())
}

fn graph() -> (BTreeMap<String, BTreeSet<String>>, BTreeMap<String, String>) {
    let mods = modules();
    let known: BTreeSet<String> = mods.keys().cloned().collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (m, text) in &mods {
        let code = code(text);
        let mut to: BTreeSet<String> = paths(&code)
            .iter()
            .map(|p| resolve(m, p, &known))
            .filter(|t| t != m)
            .collect();
        to.extend(children_used(m, &code, &known));
        edges.insert(m.clone(), to);
    }
    (edges, mods)
}

/// Child modules that `m` names by a relative path (`tasks::routes()` in `api`).
fn children_used(m: &str, code: &str, known: &BTreeSet<String>) -> Vec<String> {
    let prefix = if m == "crate" {
        String::new()
    } else {
        format!("{m}::")
    };
    known
        .iter()
        .filter_map(|k| {
            k.strip_prefix(&prefix)
                .filter(|c| !c.contains("::"))
                .map(|c| (k, c))
        })
        .filter(|(_, child)| {
            let needle = format!("{child}::");
            code.match_indices(&needle).any(|(i, _)| {
                !code[..i]
                    .chars()
                    .next_back()
                    .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':')
            })
        })
        .map(|(k, _)| k.clone())
        .collect()
}

/// Strongly connected components with more than one module (Tarjan).
fn circles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct St<'a> {
        edges: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut St<'a>, v: &'a str) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on.insert(v);
        let edges = s.edges;
        for w in edges.get(v).into_iter().flatten() {
            if !s.index.contains_key(w.as_str()) {
                visit(s, w);
                let lw = s.low[w.as_str()];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if s.on.contains(w.as_str()) {
                let iw = s.index[w.as_str()];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on.remove(w);
                comp.push(w.to_owned());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                s.out.push(comp);
            }
        }
    }
    let mut s = St {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in edges.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.out
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let (edges, _) = graph();
    assert!(
        edges.len() > 20,
        "the source walk found too little: {edges:?}"
    );
    assert_eq!(circles(&edges), Vec::<Vec<String>>::new(), "{edges:#?}");
}

#[test]
fn handlers_import_no_other_handler_and_only_the_root_imports_them() {
    let (edges, _) = graph();
    for (from, to) in &edges {
        for t in to.iter().filter(|t| *t == "api" || t.starts_with("api::")) {
            let allowed = from == "server" || (from == "api" && t.starts_with("api::"));
            assert!(allowed, "{from} imports {t}");
        }
    }
}

#[test]
fn the_application_layer_knows_nothing_of_http() {
    let (edges, mods) = graph();
    let edge_layers = [
        "api", "http", "state", "error", "wire", "server", "workers", "limits", "web",
    ];
    for (m, to) in edges.iter().filter(|(m, _)| m.starts_with("app")) {
        for t in to {
            let top = t.split("::").next().unwrap();
            assert!(!edge_layers.contains(&top), "{m} imports {t}");
        }
        assert!(!code(&mods[m]).contains("axum"), "{m} uses axum");
    }
}

#[test]
fn the_checker_sees_what_it_should() {
    let known: BTreeSet<String> = ["crate", "app", "app::tasks", "api", "api::tasks"]
        .into_iter()
        .map(str::to_owned)
        .collect();
    let mut found = Vec::new();
    expand("crate::app::{self, tasks::{x, y as z}}", "", &mut found);
    assert_eq!(
        found,
        ["crate::app", "crate::app::tasks::x", "crate::app::tasks::y"]
    );
    assert_eq!(resolve("app::tasks", "super::App", &known), "app");
    assert_eq!(
        children_used("api", "fn r() { tasks::routes(); }", &known),
        ["api::tasks"]
    );
    assert!(children_used("api", "my_tasks::z; crate::x::tasks::y", &known).is_empty());
    assert_eq!(
        resolve("api::tasks", "crate::app::tasks::post", &known),
        "app::tasks"
    );
    let cyclic: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec!["a"]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.into_iter().map(str::to_owned).collect()))
    .collect();
    assert_eq!(circles(&cyclic), [["a", "b", "c"]]);
}
