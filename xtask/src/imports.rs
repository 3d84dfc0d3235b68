//! `cargo xtask import-cycles`: draws each library crate's file-level import graph from its
//! sources and fails on any circle, so "one-way" module structure is checked, not promised.
//!
//! A file imports another when it names a path inside that file's module (`use crate::a::b`,
//! `super::X`, `other::f()`), outside `#[cfg(test)]` items. A module naming its own descendants
//! is not counted (a parent owns its children, and may re-export them); a child naming its
//! parent is. Re-exports are not followed: a file that names `super::Error` imports its parent,
//! wherever the parent got `Error` from.

mod scan;

use anyhow::{bail, Context};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The crates whose module graphs must be one-way, by their root file. The agent's binary
/// (`agent/src/main.rs`) has no modules of its own: it imports the library only.
const CRATES: &[(&str, &str)] = &[
    ("knhk-core", "core/src/lib.rs"),
    ("knhk-filter", "filter/src/lib.rs"),
    ("knhk-agent", "agent/src/lib.rs"),
    ("knhk-e2e", "tests/src/lib.rs"),
    ("xtask", "xtask/src/main.rs"),
];

/// One source file of a crate: its module path and the modules it imports, each with the line
/// of the first reference.
struct ModuleFile {
    path: PathBuf,
    imports: BTreeMap<Vec<String>, usize>,
}

/// Check every crate in [`CRATES`]; print each circle with the lines that make it.
pub fn run(root: &Path) -> anyhow::Result<()> {
    let mut circles = 0;
    for (name, lib) in CRATES {
        let modules = read_crate(&root.join(lib)).with_context(|| format!("reading {name}"))?;
        let edges = edges(&modules);
        println!(
            "{name}: {} files, {} imports",
            modules.len(),
            edges.values().map(BTreeSet::len).sum::<usize>()
        );
        for component in strongly_connected(&edges) {
            circles += 1;
            let members: Vec<String> = component
                .iter()
                .map(|m| relative(root, &modules[m].path))
                .collect();
            println!(
                "  circle of {} files: {}",
                component.len(),
                members.join(", ")
            );
            println!("  for example:");
            for (from, to) in cycle_through(&component, &edges) {
                let file = &modules[&from];
                let line = file.imports.get(&to).copied().unwrap_or(0);
                println!(
                    "    {}:{line} → {}",
                    relative(root, &file.path),
                    relative(root, &modules[&to].path)
                );
            }
        }
    }
    if circles > 0 {
        bail!("{circles} import circle(s)");
    }
    println!("no import circles");
    Ok(())
}

fn relative(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .display()
        .to_string()
}

/// Every file module reachable from `lib` through `mod name;`, keyed by module path.
fn read_crate(lib: &Path) -> anyhow::Result<BTreeMap<Vec<String>, ModuleFile>> {
    let mut modules = BTreeMap::new();
    let mut pending = vec![(Vec::<String>::new(), lib.to_path_buf())];
    let mut sources = BTreeMap::new();
    while let Some((module, path)) = pending.pop() {
        let source =
            std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
        let children = scan::declared_children(&source);
        for child in &children {
            let child_path = child_file(&path, child)
                .with_context(|| format!("{}: no file for `mod {child};`", path.display()))?;
            let mut child_module = module.clone();
            child_module.push(child.clone());
            pending.push((child_module, child_path));
        }
        sources.insert(module, (path, source, children));
    }
    let known: BTreeSet<Vec<String>> = sources.keys().cloned().collect();
    for (module, (path, source, children)) in sources {
        let mut imports = BTreeMap::new();
        for reference in scan::references(&source, &module, &children) {
            let target = deepest_module(&known, &reference.segments);
            // A module owns its children: naming a descendant (a facade's `pub use child::X`)
            // is not an import that can close a circle; naming anything else is.
            if !target.starts_with(&module) {
                imports.entry(target).or_insert(reference.line);
            }
        }
        modules.insert(module, ModuleFile { path, imports });
    }
    Ok(modules)
}

/// The file of `mod child;` declared in `parent`: `dir/child.rs` or `dir/child/mod.rs`, where
/// `dir` is the parent's folder for `lib.rs`/`main.rs`/`mod.rs` and `parent/` otherwise.
fn child_file(parent: &Path, child: &str) -> Option<PathBuf> {
    let dir = parent.parent()?;
    let stem = parent.file_stem()?.to_str()?;
    let base = if matches!(stem, "lib" | "main" | "mod") {
        dir.to_path_buf()
    } else {
        dir.join(stem)
    };
    [
        base.join(format!("{child}.rs")),
        base.join(child).join("mod.rs"),
    ]
    .into_iter()
    .find(|candidate| candidate.is_file())
}

/// The longest prefix of `segments` that is a file module.
fn deepest_module(known: &BTreeSet<Vec<String>>, segments: &[String]) -> Vec<String> {
    (0..=segments.len())
        .rev()
        .map(|n| segments[..n].to_vec())
        .find(|prefix| known.contains(prefix))
        .unwrap_or_default()
}

type Graph = BTreeMap<Vec<String>, BTreeSet<Vec<String>>>;

fn edges(modules: &BTreeMap<Vec<String>, ModuleFile>) -> Graph {
    modules
        .iter()
        .map(|(module, file)| (module.clone(), file.imports.keys().cloned().collect()))
        .collect()
}

/// The graph's strongly connected components of more than one file (Tarjan's algorithm).
fn strongly_connected(graph: &Graph) -> Vec<Vec<Vec<String>>> {
    struct State<'g> {
        graph: &'g Graph,
        index: BTreeMap<&'g Vec<String>, usize>,
        low: BTreeMap<&'g Vec<String>, usize>,
        stack: Vec<&'g Vec<String>>,
        on_stack: BTreeSet<&'g Vec<String>>,
        components: Vec<Vec<Vec<String>>>,
    }
    fn visit<'g>(s: &mut State<'g>, node: &'g Vec<String>) {
        let n = s.index.len();
        s.index.insert(node, n);
        s.low.insert(node, n);
        s.stack.push(node);
        s.on_stack.insert(node);
        for next in s.graph.get(node).into_iter().flatten() {
            if !s.graph.contains_key(next) {
                continue;
            }
            if !s.index.contains_key(next) {
                visit(s, next);
                let low = s.low[node].min(s.low[next]);
                s.low.insert(node, low);
            } else if s.on_stack.contains(next) {
                let low = s.low[node].min(s.index[next]);
                s.low.insert(node, low);
            }
        }
        if s.low[node] == s.index[node] {
            let mut component = Vec::new();
            while let Some(top) = s.stack.pop() {
                s.on_stack.remove(top);
                component.push(top.clone());
                if top == node {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.components.push(component);
            }
        }
    }
    let mut state = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        components: Vec::new(),
    };
    for node in graph.keys() {
        if !state.index.contains_key(node) {
            visit(&mut state, node);
        }
    }
    state.components
}

/// One circle through the component's first file, as (from, to) edges: the shortest path from
/// the first file back to itself (breadth-first within the component).
fn cycle_through(component: &[Vec<String>], graph: &Graph) -> Vec<(Vec<String>, Vec<String>)> {
    let members: BTreeSet<&Vec<String>> = component.iter().collect();
    let start = &component[0];
    let mut came_from: BTreeMap<&Vec<String>, &Vec<String>> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(node) = queue.pop_front() {
        for next in graph.get(node).into_iter().flatten() {
            if !members.contains(next) {
                continue;
            }
            if next == start {
                let mut path = vec![(node.clone(), start.clone())];
                let mut at = node;
                while at != start {
                    let prev = came_from[at];
                    path.push((prev.clone(), at.clone()));
                    at = prev;
                }
                path.reverse();
                return path;
            }
            if !came_from.contains_key(next) {
                came_from.insert(next, node);
                queue.push_back(next);
            }
        }
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(edges: &[(&str, &str)]) -> Graph {
        let mut g = Graph::new();
        for (from, to) in edges {
            let key = |s: &str| s.split('/').map(str::to_owned).collect::<Vec<_>>();
            g.entry(key(from)).or_default().insert(key(to));
            g.entry(key(to)).or_default();
        }
        g
    }

    /// A three-file circle is found and walked in order; a one-way chain is not a circle.
    #[test]
    fn finds_circles_only() {
        let g = graph(&[("a", "b"), ("b", "c"), ("c", "a"), ("c", "d"), ("d", "e")]);
        let components = strongly_connected(&g);
        assert_eq!(components.len(), 1);
        assert_eq!(components[0].len(), 3);
        let cycle = cycle_through(&components[0], &g);
        let names: Vec<String> = cycle
            .iter()
            .map(|(f, t)| format!("{}>{}", f[0], t[0]))
            .collect();
        assert_eq!(names, ["a>b", "b>c", "c>a"]);
        assert!(strongly_connected(&graph(&[("a", "b"), ("b", "c")])).is_empty());
    }

    /// Paths are kept to the deepest module that has a file.
    #[test]
    fn items_resolve_to_their_module() {
        let known: BTreeSet<Vec<String>> = [vec![], vec!["a".to_owned()]].into_iter().collect();
        let segs = |s: &str| s.split("::").map(str::to_owned).collect::<Vec<_>>();
        assert_eq!(deepest_module(&known, &segs("a::b::C")), segs("a"));
        assert_eq!(deepest_module(&known, &segs("x::Y")), Vec::<String>::new());
    }
}
