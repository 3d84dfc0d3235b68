//! Reads one Rust source file into the module paths it refers to: strips comments, strings and
//! `#[cfg(test)]` items, then reads `use` trees and inline paths (`crate::…`, `super::…`,
//! `self::…`, `child::…`).

/// One path the file refers to, resolved to absolute module segments (the crate root is `[]`),
/// with the 1-based line where it starts. The last segments may name an item, not a module: the
/// graph keeps the longest prefix that is a module file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub segments: Vec<String>,
    pub line: usize,
}

/// A lexical token of the subset this scanner needs.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Ident(String),
    PathSep,
    Open,
    Close,
    Comma,
    Star,
    Hash,
    Other(char),
}

/// The references in `source`, a file of module `module` (absolute segments) whose declared
/// file-backed children are `children`.
pub fn references(source: &str, module: &[String], children: &[String]) -> Vec<Reference> {
    let tokens = tokenize(&strip_comments_and_literals(source));
    let tokens = strip_cfg_test(&tokens);
    Scanner {
        tokens: &tokens,
        pos: 0,
        module,
        children,
        inline: Vec::new(),
        depth: 0,
        found: Vec::new(),
    }
    .run()
}

/// The file-backed child modules `source` declares (`mod name;`), outside `#[cfg(test)]`.
pub fn declared_children(source: &str) -> Vec<String> {
    let tokens = tokenize(&strip_comments_and_literals(source));
    let tokens = strip_cfg_test(&tokens);
    tokens
        .windows(3)
        .filter_map(|w| match w {
            [(Tok::Ident(m), _), (Tok::Ident(name), _), (Tok::Other(';'), _)] if m == "mod" => {
                Some(name.clone())
            }
            _ => None,
        })
        .collect()
}

/// `source` with comments, string, byte-string and char literals blanked (newlines kept, so line
/// numbers stay right).
fn strip_comments_and_literals(source: &str) -> String {
    let chars: Vec<char> = source.chars().collect();
    let mut out = String::with_capacity(source.len());
    let mut i = 0;
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut nesting = 0usize;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    nesting += 1;
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    nesting -= 1;
                    i += 2;
                    if nesting == 0 {
                        break;
                    }
                } else {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
        } else if c == 'r' && matches!(next, Some('#') | Some('"')) && !prev_is_ident(&chars, i) {
            // Raw string r#"…"#: find the closing quote followed by as many hashes.
            let mut j = i + 1;
            let mut hashes = 0;
            while chars.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if chars.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            while j < chars.len() {
                if chars[j] == '"' && (0..hashes).all(|h| chars.get(j + 1 + h) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                out.push(blank(chars[j]));
                j += 1;
            }
            out.push_str("\"\"");
            i = j;
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    i += 1;
                }
                if let Some(&ch) = chars.get(i) {
                    out.push(blank(ch));
                }
                i += 1;
            }
            out.push_str("\"\"");
            i += 1;
        } else if c == '\'' {
            // A char literal ('x', '\n', '\u{..}') or a lifetime ('a): a literal closes within a
            // few characters.
            let close = if next == Some('\\') {
                (i + 2..chars.len().min(i + 12)).find(|&j| chars[j] == '\'')
            } else if chars.get(i + 2) == Some(&'\'') {
                Some(i + 2)
            } else {
                None
            };
            match close {
                Some(j) => {
                    out.push_str("' '");
                    i = j + 1;
                }
                None => {
                    out.push(c);
                    i += 1;
                }
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn prev_is_ident(chars: &[char], i: usize) -> bool {
    i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_')
}

fn tokenize(text: &str) -> Vec<(Tok, usize)> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
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
            let word: String = chars[start..i].iter().collect();
            let word = word.strip_prefix("r#").map(str::to_owned).unwrap_or(word);
            tokens.push((Tok::Ident(word), line));
        } else if c == ':' && chars.get(i + 1) == Some(&':') {
            tokens.push((Tok::PathSep, line));
            i += 2;
        } else {
            let tok = match c {
                '{' => Tok::Open,
                '}' => Tok::Close,
                ',' => Tok::Comma,
                '*' => Tok::Star,
                '#' => Tok::Hash,
                other => Tok::Other(other),
            };
            tokens.push((tok, line));
            i += 1;
        }
    }
    tokens
}

/// The tokens without the items that `#[cfg(test)]` marks (test modules and their imports are
/// not part of the module graph a build has).
fn strip_cfg_test(tokens: &[(Tok, usize)]) -> Vec<(Tok, usize)> {
    let mut out = Vec::with_capacity(tokens.len());
    let mut i = 0;
    while i < tokens.len() {
        if is_cfg_test_at(tokens, i) {
            // Skip the attribute (7 tokens: # [ cfg ( test ) ]), then the item: up to its `;` or
            // through its balanced `{ … }`.
            let mut j = i + 7;
            let mut depth = 0usize;
            while j < tokens.len() {
                match tokens[j].0 {
                    Tok::Open => depth += 1,
                    Tok::Close => {
                        depth = depth.saturating_sub(1);
                        if depth == 0 {
                            j += 1;
                            break;
                        }
                    }
                    Tok::Other(';') if depth == 0 => {
                        j += 1;
                        break;
                    }
                    _ => {}
                }
                j += 1;
            }
            i = j;
        } else {
            out.push(tokens[i].clone());
            i += 1;
        }
    }
    out
}

fn is_cfg_test_at(tokens: &[(Tok, usize)], i: usize) -> bool {
    let want = [
        Tok::Hash,
        Tok::Other('['),
        Tok::Ident("cfg".into()),
        Tok::Other('('),
        Tok::Ident("test".into()),
        Tok::Other(')'),
        Tok::Other(']'),
    ];
    tokens.len() >= i + want.len()
        && tokens[i..i + want.len()]
            .iter()
            .map(|t| &t.0)
            .eq(want.iter())
}

struct Scanner<'a> {
    tokens: &'a [(Tok, usize)],
    pos: usize,
    module: &'a [String],
    children: &'a [String],
    /// Inline modules (`mod name { … }`) we are inside, with the brace depth that closes each.
    inline: Vec<(String, usize)>,
    depth: usize,
    found: Vec<Reference>,
}

impl Scanner<'_> {
    fn run(mut self) -> Vec<Reference> {
        while self.pos < self.tokens.len() {
            let (tok, line) = self.tokens[self.pos].clone();
            match tok {
                Tok::Open => {
                    self.depth += 1;
                    self.pos += 1;
                }
                Tok::Close => {
                    if self.inline.last().is_some_and(|(_, d)| *d == self.depth) {
                        self.inline.pop();
                    }
                    self.depth = self.depth.saturating_sub(1);
                    self.pos += 1;
                }
                Tok::Ident(ref word) if word == "mod" => {
                    if let (Some((Tok::Ident(name), _)), Some((Tok::Open, _))) =
                        (self.tokens.get(self.pos + 1), self.tokens.get(self.pos + 2))
                    {
                        self.inline.push((name.clone(), self.depth + 1));
                    }
                    self.pos += 1;
                }
                Tok::Ident(ref word) if word == "use" => {
                    self.pos += 1;
                    self.use_tree(&[], line);
                }
                Tok::Ident(ref word) if self.starts_path(word) => {
                    let prefix = self.path_segments();
                    if let Some(abs) = self.resolve(&prefix) {
                        self.found.push(Reference {
                            segments: abs,
                            line,
                        });
                    }
                }
                _ => self.pos += 1,
            }
        }
        self.found
    }

    /// Whether an identifier here begins a path worth resolving: `crate`, `super`, `self` or a
    /// child module, followed by `::`, and not itself after `::` (the middle of another path) or
    /// after `in` (`pub(in crate::x)`).
    fn starts_path(&self, word: &str) -> bool {
        let followed = matches!(self.tokens.get(self.pos + 1), Some((Tok::PathSep, _)));
        let after_sep = self.pos > 0 && matches!(self.tokens[self.pos - 1].0, Tok::PathSep);
        let after_in =
            self.pos > 0 && matches!(&self.tokens[self.pos - 1].0, Tok::Ident(w) if w == "in");
        let known = matches!(word, "crate" | "super" | "self") || self.is_child(word);
        followed && !after_sep && !after_in && known
    }

    fn is_child(&self, word: &str) -> bool {
        self.inline.is_empty() && self.children.iter().any(|c| c == word)
    }

    /// Reads `a::b::c` (stopping before `::{` or `::*`).
    fn path_segments(&mut self) -> Vec<String> {
        let mut segments = Vec::new();
        while let Some((Tok::Ident(word), _)) = self.tokens.get(self.pos) {
            segments.push(word.clone());
            self.pos += 1;
            match (self.tokens.get(self.pos), self.tokens.get(self.pos + 1)) {
                (Some((Tok::PathSep, _)), Some((Tok::Ident(_), _))) => self.pos += 1,
                _ => break,
            }
        }
        segments
    }

    /// Reads one use tree under `prefix` (relative segments so far): `a::b`, `a::{b, c::d}`,
    /// `a::*`, `a as b`.
    fn use_tree(&mut self, prefix: &[String], line: usize) {
        let mut path = prefix.to_vec();
        path.extend(self.path_segments());
        if matches!(self.tokens.get(self.pos), Some((Tok::PathSep, _))) {
            self.pos += 1;
        }
        match self.tokens.get(self.pos) {
            Some((Tok::Open, _)) => {
                self.pos += 1;
                loop {
                    match self.tokens.get(self.pos) {
                        Some((Tok::Close, _)) => {
                            self.pos += 1;
                            break;
                        }
                        Some((Tok::Comma, _)) => self.pos += 1,
                        Some((_, l)) => {
                            let l = *l;
                            let before = self.pos;
                            self.use_tree(&path, l);
                            if self.pos == before {
                                self.pos += 1;
                            }
                        }
                        None => break,
                    }
                }
            }
            _ => {
                if matches!(self.tokens.get(self.pos), Some((Tok::Star, _))) {
                    self.pos += 1;
                }
                // `self` inside a group (`a::{self, b}`) names the group's prefix.
                let path: Vec<String> = path
                    .into_iter()
                    .enumerate()
                    .filter(|(i, segment)| *i == 0 || segment != "self")
                    .map(|(_, segment)| segment)
                    .collect();
                if let Some(abs) = self.resolve(&path) {
                    self.found.push(Reference {
                        segments: abs,
                        line,
                    });
                }
            }
        }
    }

    /// Absolute segments of a path seen in this file, or `None` for an external crate's path.
    fn resolve(&self, path: &[String]) -> Option<Vec<String>> {
        let mut here: Vec<String> = self.module.to_vec();
        here.extend(self.inline.iter().map(|(name, _)| name.clone()));
        let first = path.first()?;
        let (mut abs, rest) = match first.as_str() {
            "crate" => (Vec::new(), &path[1..]),
            "self" => (here, &path[1..]),
            "super" => {
                let mut at = here;
                let mut i = 0;
                while path.get(i).map(String::as_str) == Some("super") {
                    at.pop();
                    i += 1;
                }
                (at, &path[i..])
            }
            child if self.is_child(child) => (here, path),
            _ => return None,
        };
        abs.extend(rest.iter().cloned());
        Some(abs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segs(path: &str) -> Vec<String> {
        path.split("::")
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    }

    fn refs(source: &str, module: &str, children: &[&str]) -> Vec<String> {
        let children: Vec<String> = children.iter().map(|c| c.to_string()).collect();
        references(source, &segs(module), &children)
            .into_iter()
            .map(|r| r.segments.join("::"))
            .collect()
    }

    /// `use` trees with groups, `self`, globs and renames resolve to absolute paths.
    #[test]
    fn use_trees_resolve() {
        let got = refs(
            "use crate::a::{b::C, d, self};\nuse super::e::*;\nuse self::f as g;\nuse std::io;",
            "x::y",
            &[],
        );
        assert_eq!(got, ["a::b::C", "a::d", "a", "x::e", "x::y::f"]);
    }

    /// Inline paths and child modules count; paths inside comments, strings, other paths and
    /// `#[cfg(test)]` items do not.
    #[test]
    fn inline_paths_and_what_is_skipped() {
        let source = r#"
            // use crate::commented::Out;
            let s = "crate::in_string::X";
            fn f() -> crate::m::T { child::g(); other::child::h() }
            pub(in crate::vis) fn v() {}
            #[cfg(test)]
            mod tests { use crate::test_only::X; }
            #[cfg(test)]
            use crate::test_import;
            let c = '"'; use crate::after_char::Y;
        "#;
        assert_eq!(
            refs(source, "p", &["child"]),
            ["m::T", "p::child::g", "after_char::Y"]
        );
    }

    /// `super` inside an inline module is that module's parent, the file's own module.
    #[test]
    fn super_in_inline_module() {
        let got = refs("mod inner { use super::X; }\nuse super::Y;", "a::b", &[]);
        assert_eq!(got, ["a::b::X", "a::Y"]);
    }

    /// `mod name;` lines are children; inline and test modules are not.
    #[test]
    fn children_are_file_modules() {
        let source = "mod a;\npub mod b;\nmod c { }\n#[cfg(test)]\nmod tests;\n";
        assert_eq!(declared_children(source), ["a", "b"]);
    }
}
