//! Where Envoy's instructions go: Envoy's own code, tcmalloc, JIT-compiled code (the wasm, LuaJIT's traces), libc, the rest.
//!
//! Callgrind names an object only for code inside its `.text` section. The pinned Envoy is
//! stripped, so its functions are hex addresses, and the code of its other executable sections
//! (tcmalloc's `google_malloc`, `malloc_hook`, `.plt`) shows up as object `???`, just like code
//! V8 generated at run time. The two are told apart by address: [`Image`] knows where each
//! executable section of the Envoy binary is mapped in the running process (its ELF section
//! headers plus `/proc/<pid>/maps`); anonymous code outside the image is JIT code. V8's embedded
//! builtins are part of Envoy's `.text`, so they count as `envoy`.
//!
//! `tcmalloc` is what tcmalloc puts in its `google_malloc` section: the allocator's entry points
//! (`malloc`, `free`, `new`, `delete` and their inlined fast paths). Its slow paths live in
//! `.text` and count as `envoy`.

use super::callgrind::Profile;
use anyhow::{bail, Context};
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// A place executed code belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Category {
    /// The Envoy binary's own code (V8 and its embedded builtins included).
    Envoy,
    /// tcmalloc's entry points and fast paths, in the Envoy binary's `google_malloc` and `malloc_hook` sections.
    Tcmalloc,
    /// Anonymous code outside any file: what V8 compiled at run time (the wasm module and its
    /// stubs), or LuaJIT's machine code in the lua variant.
    Jit,
    /// The C library.
    Libc,
    /// Everything else (the dynamic loader, libm, valgrind's preload).
    Other,
}

impl Category {
    /// All categories, in table order.
    pub const ALL: [Category; 5] = [
        Category::Envoy,
        Category::Tcmalloc,
        Category::Jit,
        Category::Libc,
        Category::Other,
    ];

    /// Column heading.
    pub fn name(self) -> &'static str {
        match self {
            Category::Envoy => "envoy",
            Category::Tcmalloc => "tcmalloc",
            Category::Jit => "JIT",
            Category::Libc => "libc",
            Category::Other => "other",
        }
    }
}

/// Instructions per category, in [`Category::ALL`] order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Split(pub [u64; 5]);

impl Split {
    /// The sum of two splits.
    pub fn plus(&self, other: &Split) -> Split {
        let mut sum = *self;
        for (a, b) in sum.0.iter_mut().zip(other.0) {
            *a += b;
        }
        sum
    }
}

/// An executable section of the Envoy binary where the running process mapped it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Mapped {
    start: u64,
    end: u64,
    section: String,
}

/// The Envoy binary as the running process mapped it.
#[derive(Debug, Clone)]
pub struct Image {
    /// The binary's path as callgrind names the object (canonical).
    object: String,
    sections: Vec<Mapped>,
}

impl Image {
    /// Locate the executable sections of `elf` in the memory of process `pid`.
    pub fn load(elf: &Path, pid: u32) -> anyhow::Result<Image> {
        let sections = exec_sections(elf)?;
        let maps_path = format!("/proc/{pid}/maps");
        let maps =
            std::fs::read_to_string(&maps_path).with_context(|| format!("read {maps_path}"))?;
        let object = elf.to_string_lossy().into_owned();
        let image = Image::locate(object, &sections, &maps);
        if image.sections.is_empty() {
            bail!(
                "no executable section of {} is mapped in process {pid}",
                elf.display()
            );
        }
        Ok(image)
    }

    /// Place `sections` (file offset, size, name) through the mappings of `object` in `maps`.
    fn locate(object: String, sections: &[ElfSection], maps: &str) -> Image {
        let mappings: Vec<(u64, u64, u64)> = maps
            .lines()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                if fields.get(5) != Some(&object.as_str()) {
                    return None;
                }
                let (start, end) = fields.first()?.split_once('-')?;
                let hex = |t: &str| u64::from_str_radix(t, 16).ok();
                Some((hex(start)?, hex(end)?, hex(fields.get(2)?)?))
            })
            .collect();
        let sections = sections
            .iter()
            .filter_map(|s| {
                let (map_start, _, map_offset) = mappings.iter().find(|(start, end, offset)| {
                    *offset <= s.offset && s.offset < offset + (end - start)
                })?;
                let start = map_start + (s.offset - map_offset);
                Some(Mapped {
                    start,
                    end: start + s.size,
                    section: s.name.clone(),
                })
            })
            .collect();
        Image { object, sections }
    }

    /// The category of code in `function` of `object`, as a callgrind dump names them.
    pub fn category(&self, object: &str, function: &str) -> Category {
        if object == self.object {
            return Category::Envoy;
        }
        if object == "???" {
            // A recursion level may follow the address: `0x…'2`.
            let Some(address) = function
                .split('\'')
                .next()
                .and_then(|f| f.strip_prefix("0x"))
                .and_then(|hex| u64::from_str_radix(hex, 16).ok())
            else {
                return Category::Other;
            };
            return match self
                .sections
                .iter()
                .find(|s| s.start <= address && address < s.end)
            {
                Some(s) if matches!(s.section.as_str(), "google_malloc" | "malloc_hook") => {
                    Category::Tcmalloc
                }
                Some(_) => Category::Envoy,
                None => Category::Jit,
            };
        }
        let file = object.rsplit('/').next().unwrap_or(object);
        if file.starts_with("libc.so") || file.starts_with("libc-") {
            Category::Libc
        } else {
            Category::Other
        }
    }

    /// Self costs of `profile` summed by category.
    pub fn split(&self, profile: &Profile) -> Split {
        let mut split = Split::default();
        for f in &profile.functions {
            split.0[self.category(&f.object, &f.function) as usize] += f.instructions;
        }
        split
    }
}

/// An ELF section: where it is in the file and what it is called.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ElfSection {
    name: String,
    offset: u64,
    size: u64,
}

/// `SHF_ALLOC | SHF_EXECINSTR`: a section of code loaded into memory.
const EXEC_FLAGS: u64 = 0x2 | 0x4;

/// The executable sections of the 64-bit little-endian ELF file at `path`, from its section headers.
fn exec_sections(path: &Path) -> anyhow::Result<Vec<ElfSection>> {
    let context = || format!("read ELF section headers of {}", path.display());
    let mut file = std::fs::File::open(path).with_context(context)?;
    let mut header = [0u8; 64];
    file.read_exact(&mut header).with_context(context)?;
    if &header[..4] != b"\x7fELF" || header[4] != 2 || header[5] != 1 {
        bail!("{} is not a 64-bit little-endian ELF file", path.display());
    }
    let shoff = le(&header, 0x28, 8);
    let entsize = le(&header, 0x3a, 2);
    let count = le(&header, 0x3c, 2);
    let strndx = le(&header, 0x3e, 2);
    if entsize < 0x28 || strndx >= count {
        bail!("{}: unexpected section header layout", path.display());
    }
    let table = read_at(&mut file, shoff, entsize * count).with_context(context)?;
    let entry = |i: u64| &table[(i * entsize) as usize..((i + 1) * entsize) as usize];
    let strtab_entry = entry(strndx);
    let strtab = read_at(
        &mut file,
        le(strtab_entry, 0x18, 8),
        le(strtab_entry, 0x20, 8),
    )
    .with_context(context)?;
    let mut sections = Vec::new();
    for i in 0..count {
        let e = entry(i);
        if le(e, 0x08, 8) & EXEC_FLAGS != EXEC_FLAGS {
            continue;
        }
        let name_start = (le(e, 0, 4) as usize).min(strtab.len());
        let name_len = strtab[name_start..]
            .iter()
            .position(|b| *b == 0)
            .unwrap_or(strtab.len() - name_start);
        sections.push(ElfSection {
            name: String::from_utf8_lossy(&strtab[name_start..name_start + name_len]).into_owned(),
            offset: le(e, 0x18, 8),
            size: le(e, 0x20, 8),
        });
    }
    Ok(sections)
}

/// The little-endian unsigned integer of `len` bytes at `at` in `bytes`.
fn le(bytes: &[u8], at: usize, len: usize) -> u64 {
    bytes[at..at + len]
        .iter()
        .rev()
        .fold(0, |acc, b| (acc << 8) | u64::from(*b))
}

/// `len` bytes of `file` from `offset`.
fn read_at(file: &mut std::fs::File, offset: u64, len: u64) -> std::io::Result<Vec<u8>> {
    file.seek(SeekFrom::Start(offset))?;
    let mut bytes = vec![0u8; len as usize];
    file.read_exact(&mut bytes)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench_instructions::callgrind::FnCost;

    /// The maps of a valgrind'ed Envoy (abridged from a real run): the binary's text mapping
    /// starts at file offset 0x207d000.
    const MAPS: &str = "\
00108000-02185000 r--p 00000000 fe:00 5326490    /opt/envoy
02186000-062ec000 r-xp 0207d000 fe:00 5326490    /opt/envoy
062ec000-06679000 r--p 061e2000 fe:00 5326490    /opt/envoy
07143000-07144000 r--p 00000000 fe:00 325843     /usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2
1ffefff000-1fff001000 rwxp 00000000 00:00 0
";

    fn image() -> Image {
        let sections = [
            (".text", 0x207d000, 0x410431f),
            ("google_malloc", 0x6181380, 0x603ce),
            (".plt", 0x61e18f0, 0x15f0),
        ]
        .map(|(name, offset, size)| ElfSection {
            name: name.to_string(),
            offset,
            size,
        });
        Image::locate("/opt/envoy".to_string(), &sections, MAPS)
    }

    /// Sections are placed through the mapping that holds their file offset.
    #[test]
    fn sections_are_located_through_maps() {
        let image = image();
        let malloc = &image.sections[1];
        assert_eq!(malloc.section, "google_malloc");
        assert_eq!(malloc.start, 0x02186000 + (0x6181380 - 0x207d000));
        assert_eq!(malloc.end, malloc.start + 0x603ce);
    }

    /// Objects by name, anonymous code by address: tcmalloc, other Envoy sections, JIT.
    #[test]
    fn categories() {
        let image = image();
        let c = |object: &str, function: &str| image.category(object, function);
        assert_eq!(c("/opt/envoy", "0x0000000002200000"), Category::Envoy);
        assert_eq!(c("???", "0x000000000629a6d0"), Category::Tcmalloc);
        assert_eq!(c("???", "0x000000000629a6d0'2"), Category::Tcmalloc);
        assert_eq!(c("???", "0x00000000062eb000"), Category::Envoy);
        assert_eq!(c("???", "0x0000001ffefff100"), Category::Jit);
        assert_eq!(c("???", "calloc"), Category::Other);
        assert_eq!(
            c("/usr/lib/x86_64-linux-gnu/libc.so.6", "memcpy"),
            Category::Libc
        );
        assert_eq!(c("/lib/libc-2.31.so", "memcpy"), Category::Libc);
        assert_eq!(
            c("/usr/lib/x86_64-linux-gnu/libm.so.6", "exp"),
            Category::Other
        );
    }

    /// A profile's self costs add up per category.
    #[test]
    fn split_sums_by_category() {
        let cost = |object: &str, function: &str, instructions| FnCost {
            object: object.into(),
            function: function.into(),
            instructions,
        };
        let profile = Profile {
            totals: 111,
            functions: vec![
                cost("/opt/envoy", "0x1", 100),
                cost("???", "0x000000000629a6d0", 10),
                cost("/usr/lib/libc.so.6", "free", 1),
            ],
        };
        let split = image().split(&profile);
        assert_eq!(split, Split([100, 10, 0, 1, 0]));
        assert_eq!(split.plus(&split), Split([200, 20, 0, 2, 0]));
    }

    /// The section reader finds `.text` in a real ELF file: this test binary.
    #[test]
    fn reads_exec_sections_of_an_elf_file() {
        let exe = std::env::current_exe().unwrap();
        let sections = exec_sections(&exe).unwrap();
        assert!(
            sections.iter().any(|s| s.name == ".text" && s.size > 0),
            "{sections:?}"
        );
        assert!(exec_sections(Path::new("/proc/self/status")).is_err());
    }
}
