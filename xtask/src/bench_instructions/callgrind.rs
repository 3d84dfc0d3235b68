//! Reader of callgrind's out-file format: the `totals:` line and the self cost (instructions, `Ir`) of every function, by object.
//!
//! What the reader relies on (valgrind's "Callgrind Format Specification"):
//! - header lines `events: Ir …` (the cost columns), `positions: line` (or `instr line`: how many
//!   position columns start a cost line) and `totals: <costs>` (what the dump counted);
//! - `ob=`, `fl=`/`fi=`/`fe=`, `fn=` set the current object, file and function; `cob=`, `cfi=`/`cfl=`,
//!   `cfn=` name a call's target. With name compression a name is given as `(id) name` the first
//!   time and as `(id)` afterwards, one id space for objects, one for files, one for functions,
//!   whichever key (`fn=` or `cfn=`) defined it;
//! - a cost line is positions then costs (`<line> <Ir>`; positions may be relative, `+2`, `-1`
//!   or `*`); it adds to the current function's self cost, except the line right after a
//!   `calls=` line, which is the inclusive cost of that call and belongs to the callee.
//!
//! Every line of a dump's self costs together make its `totals:`; [`Profile::self_total`] lets a
//! caller check that. Jumps (`jump=`, `jcnd=`, only with `--collect-jumps`) are ignored.

use anyhow::{bail, Context};
use std::collections::HashMap;
use std::path::Path;

/// Self cost of one function of one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FnCost {
    /// The object (`ob=`): a file path, or `???` for code outside any known object.
    pub object: String,
    /// The function (`fn=`): a symbol, or a hex address (`0x…`) when the object has no symbols.
    pub function: String,
    /// Instructions executed in the function itself (callees excluded).
    pub instructions: u64,
}

/// One callgrind dump.
#[derive(Debug, Clone, Default)]
pub struct Profile {
    /// The `totals:` line's `Ir` (or `summary:` when there is no `totals:`).
    pub totals: u64,
    /// Self cost of every function with a cost line, in order of first appearance.
    pub functions: Vec<FnCost>,
}

impl Profile {
    /// The sum of all self costs; equals [`Profile::totals`] for a consistent dump.
    pub fn self_total(&self) -> u64 {
        self.functions.iter().map(|f| f.instructions).sum()
    }
}

/// Read and parse the out file at `path`.
pub fn read(path: &Path) -> anyhow::Result<Profile> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    parse(&text).with_context(|| format!("parse callgrind file {}", path.display()))
}

/// Parse the text of one out file.
pub fn parse(text: &str) -> anyhow::Result<Profile> {
    let mut parser = Parser::default();
    for (index, line) in text.lines().enumerate() {
        parser
            .line(line)
            .with_context(|| format!("line {}: {line:?}", index + 1))?;
    }
    parser.finish()
}

/// The three name spaces of compressed names.
#[derive(Debug, Clone, Copy)]
enum Space {
    Object = 0,
    File = 1,
    Function = 2,
}

/// Parser state, line by line.
#[derive(Debug)]
struct Parser {
    /// Position columns at the start of a cost line.
    positions: usize,
    /// Index of `Ir` among the cost columns.
    ir_column: usize,
    /// Compressed names by space and id.
    names: [HashMap<u64, String>; 3],
    object: String,
    function: String,
    /// Index into `functions` of the current (object, function), once a cost line needed it.
    current: Option<usize>,
    /// Index of every (object, function) seen with a cost line.
    index: HashMap<(String, String), usize>,
    functions: Vec<FnCost>,
    /// The previous line was `calls=`: the next cost line is a call's inclusive cost.
    after_calls: bool,
    totals: Option<u64>,
    summary: Option<u64>,
}

impl Default for Parser {
    fn default() -> Parser {
        Parser {
            positions: 1,
            ir_column: 0,
            names: Default::default(),
            object: "???".to_string(),
            function: "???".to_string(),
            current: None,
            index: HashMap::new(),
            functions: Vec::new(),
            after_calls: false,
            totals: None,
            summary: None,
        }
    }
}

impl Parser {
    fn line(&mut self, line: &str) -> anyhow::Result<()> {
        let Some(first) = line.chars().next() else {
            return Ok(());
        };
        if first.is_ascii_digit() || matches!(first, '+' | '-' | '*') {
            return self.cost_line(line);
        }
        if let Some((key, value)) = line.split_once('=') {
            if key.chars().all(|c| c.is_ascii_lowercase()) {
                return self.spec_line(key, value);
            }
        }
        if let Some((key, value)) = line.split_once(':') {
            self.header_line(key, value)?;
        }
        Ok(())
    }

    fn spec_line(&mut self, key: &str, value: &str) -> anyhow::Result<()> {
        match key {
            "ob" => {
                self.object = self.name(Space::Object, value)?;
                self.current = None;
            }
            "fn" => {
                self.function = self.name(Space::Function, value)?;
                self.current = None;
            }
            "cob" => {
                self.name(Space::Object, value)?;
            }
            "cfn" => {
                self.name(Space::Function, value)?;
            }
            "fl" | "fi" | "fe" | "cfi" | "cfl" => {
                self.name(Space::File, value)?;
            }
            "calls" => self.after_calls = true,
            _ => {}
        }
        Ok(())
    }

    /// Resolve a possibly compressed name, defining its id on first use.
    fn name(&mut self, space: Space, value: &str) -> anyhow::Result<String> {
        let Some(rest) = value.strip_prefix('(') else {
            return Ok(value.trim().to_string());
        };
        let (id, name) = rest.split_once(')').context("`(id` without `)`")?;
        let id: u64 = id
            .trim()
            .parse()
            .with_context(|| format!("name id {id:?}"))?;
        let names = &mut self.names[space as usize];
        let name = name.trim();
        if name.is_empty() {
            return names
                .get(&id)
                .cloned()
                .with_context(|| format!("name id ({id}) used before it was defined"));
        }
        names.insert(id, name.to_string());
        Ok(name.to_string())
    }

    fn header_line(&mut self, key: &str, value: &str) -> anyhow::Result<()> {
        match key {
            "events" => {
                self.ir_column = value
                    .split_whitespace()
                    .position(|e| e == "Ir")
                    .with_context(|| format!("no Ir among events {value:?}"))?;
            }
            "positions" => self.positions = value.split_whitespace().count().max(1),
            "totals" => self.totals = Some(self.ir_of(value.split_whitespace())?),
            "summary" => self.summary = Some(self.ir_of(value.split_whitespace())?),
            _ => {}
        }
        Ok(())
    }

    fn cost_line(&mut self, line: &str) -> anyhow::Result<()> {
        let costs = line.split_whitespace().skip(self.positions);
        let ir = self.ir_of(costs)?;
        if std::mem::take(&mut self.after_calls) {
            // The inclusive cost of the call just described: the callee's, not ours.
            return Ok(());
        }
        let index = match self.current {
            Some(index) => index,
            None => self.current_index(),
        };
        self.functions[index].instructions += ir;
        Ok(())
    }

    /// The `Ir` column of a list of costs; a missing trailing column counts 0.
    fn ir_of<'a>(&self, mut costs: impl Iterator<Item = &'a str>) -> anyhow::Result<u64> {
        match costs.nth(self.ir_column) {
            Some(text) => text.parse().with_context(|| format!("cost {text:?}")),
            None => Ok(0),
        }
    }

    fn current_index(&mut self) -> usize {
        let key = (self.object.clone(), self.function.clone());
        let next = self.functions.len();
        let index = *self.index.entry(key).or_insert(next);
        if index == next {
            self.functions.push(FnCost {
                object: self.object.clone(),
                function: self.function.clone(),
                instructions: 0,
            });
        }
        self.current = Some(index);
        index
    }

    fn finish(self) -> anyhow::Result<Profile> {
        let Some(totals) = self.totals.or(self.summary) else {
            bail!("no `totals:` or `summary:` line (incomplete dump?)");
        };
        Ok(Profile {
            totals,
            functions: self.functions,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small dump in callgrind's compressed format: two objects, a call whose inclusive cost
    /// must not count as the caller's, names defined by `cfn=`/`cob=` and used later by
    /// `fn=`/`ob=`, relative positions, and a `totals:` line.
    const SAMPLE: &str = "\
# callgrind format
version: 1
creator: callgrind-3.19.0
cmd:  envoy -c x.yaml
part: 2

desc: Trigger: dump

positions: line
events: Ir
summary: 175

ob=(1) /usr/bin/envoy
fl=(1) ???
fn=(1) 0x0000000000401000
0 10
+2 5
cob=(2) /usr/lib/libc.so.6
cfi=(2) ???
cfn=(2) memcpy
calls=3 0
0 60
* 7
cfn=(3) 0x000000007f001000
calls=1 0
0 40

ob=(2)
fl=(2)
fn=(2)
0 60

ob=(3) ???
fl=(1)
fn=(3)
0 40

ob=(1)
fl=(1)
fn=(1)
-2 3

totals: 125
";

    /// Self costs: calls' inclusive lines skipped, compressed names resolved in their own space.
    #[test]
    fn self_costs_skip_inclusive_call_costs() {
        let p = parse(SAMPLE).unwrap();
        assert_eq!(p.totals, 125);
        let got: Vec<(&str, &str, u64)> = p
            .functions
            .iter()
            .map(|f| (f.object.as_str(), f.function.as_str(), f.instructions))
            .collect();
        assert_eq!(
            got,
            [
                ("/usr/bin/envoy", "0x0000000000401000", 25),
                ("/usr/lib/libc.so.6", "memcpy", 60),
                ("???", "0x000000007f001000", 40),
            ]
        );
        assert_eq!(p.self_total(), p.totals);
    }

    /// `summary:` stands in for a missing `totals:`; no total at all is an error.
    #[test]
    fn totals_fall_back_to_summary() {
        let p = parse("events: Ir\nsummary: 9\nfn=f\n1 9\n").unwrap();
        assert_eq!((p.totals, p.self_total()), (9, 9));
        assert!(parse("events: Ir\nfn=f\n1 9\n").is_err());
    }

    /// With several events and `instr line` positions, the Ir column is found by name.
    #[test]
    fn ir_column_by_name_and_position_count() {
        let text =
            "positions: instr line\nevents: Dr Ir\nfn=(1) f\n0x10 3 4 5\n+3 * 1\ntotals: 9 5\n";
        let p = parse(text).unwrap();
        assert_eq!(p.totals, 5);
        // The second line has no Ir column: it counts 0.
        assert_eq!(p.functions[0].instructions, 5);
    }

    /// An id used before any definition is an error, not a silent misattribution.
    #[test]
    fn undefined_name_id_is_an_error() {
        let err = parse("events: Ir\nfn=(7)\n0 1\ntotals: 1\n").unwrap_err();
        assert!(format!("{err:#}").contains("(7) used before"), "{err:#}");
    }
}
