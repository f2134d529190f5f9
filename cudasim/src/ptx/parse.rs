//! PTX text → [`Module`]: directives, kernels, register declarations, and every instruction
//! decoded into an [`Op`].
//!
//! The grammar is the subset of the PTX ISA (version 9.0) that NVRTC emits for C++ kernels with
//! `extern "C" __global__` entry points. Whatever is outside it — an unknown directive, opcode or
//! modifier, a device function (`.func`), a module-scope `.global` variable — is an error naming
//! the line, so a kernel that needs something new fails loudly when its module loads instead of
//! running wrong.

use super::ir::*;
use super::lex::{tokenize, Tok, Token};
use std::collections::HashMap;

/// A module that cannot be loaded: the 1-based PTX line and what is wrong there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadError {
    pub line: u32,
    pub msg: String,
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PTX line {}: {}", self.line, self.msg)
    }
}

impl std::error::Error for LoadError {}

type R<T> = Result<T, LoadError>;

fn err<T>(line: u32, msg: impl Into<String>) -> R<T> {
    Err(LoadError { line, msg: msg.into() })
}

/// A register reference resolved at parse time (scopes are lexical).
#[derive(Clone, Copy, Debug, PartialEq)]
struct RegRef {
    class: RegClass,
    idx: u32,
}

/// An operand as written, registers already resolved.
#[derive(Clone, Debug, PartialEq)]
enum Sy {
    Reg(RegRef),
    Special(Sreg),
    /// A label, a `.shared` variable or a parameter name.
    Sym(String),
    Num {
        text: String,
        neg: bool,
    },
    /// `[base+off]`: base is a register, a symbol, or absent (`[imm]`).
    Addr {
        base: Option<Box<Sy>>,
        off: i64,
    },
    Vec(Vec<Sy>),
    /// `d|p` (setp, shfl).
    Pair(Box<Sy>, Box<Sy>),
    Not(Box<Sy>),
    Sink,
}

struct SynInstr {
    guard: Option<Sy>,
    opcode: String,
    ops: Vec<Sy>,
    line: u32,
}

#[derive(Clone, Debug)]
struct SharedDecl {
    name: String,
    size: u32,
    align: u32,
    /// `.extern .shared NAME[]`: dynamic shared memory.
    dynamic: bool,
    line: u32,
}

struct Parser<'a> {
    t: &'a [Token],
    i: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<&'a Tok> {
        self.t.get(self.i).map(|t| &t.tok)
    }
    fn line(&self) -> u32 {
        self.t.get(self.i).or(self.t.last()).map_or(0, |t| t.line)
    }
    fn next(&mut self) -> R<&'a Tok> {
        let line = self.line();
        let t = self.t.get(self.i).map(|t| &t.tok);
        self.i += 1;
        t.map_or_else(|| err(line, "unexpected end of the module"), Ok)
    }
    fn is_p(&self, c: char) -> bool {
        self.peek() == Some(&Tok::P(c))
    }
    fn eat_p(&mut self, c: char) -> bool {
        if self.is_p(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn expect_p(&mut self, c: char) -> R<()> {
        let line = self.line();
        match self.next()? {
            Tok::P(x) if *x == c => Ok(()),
            other => err(line, format!("expected `{c}`, found {}", show(other))),
        }
    }
    fn word(&mut self) -> R<&'a str> {
        let line = self.line();
        match self.next()? {
            Tok::Word(w) => Ok(w),
            other => err(line, format!("expected a name, found {}", show(other))),
        }
    }
    fn num(&mut self) -> R<u64> {
        let line = self.line();
        match self.next()? {
            Tok::Num(n) => parse_int(n).ok_or_else(|| LoadError {
                line,
                msg: format!("bad number `{n}`"),
            }),
            other => err(line, format!("expected a number, found {}", show(other))),
        }
    }
    fn peek_word(&self) -> Option<&'a str> {
        match self.peek() {
            Some(Tok::Word(w)) => Some(w),
            _ => None,
        }
    }
    /// Skip the rest of a directive that ends at the end of its line (`.loc`, `.file`).
    fn skip_line(&mut self, line: u32) {
        while self.i < self.t.len() && self.t[self.i].line == line {
            self.i += 1;
        }
    }
}

fn show(t: &Tok) -> String {
    match t {
        Tok::Word(w) => format!("`{w}`"),
        Tok::Num(n) => format!("`{n}`"),
        Tok::Str(s) => format!("\"{s}\""),
        Tok::P(c) => format!("`{c}`"),
    }
}

/// An integer literal: decimal, `0x` hex, `0b` binary, leading-zero octal, optional `U` suffix.
pub(crate) fn parse_int(s: &str) -> Option<u64> {
    let s = s.strip_suffix('U').unwrap_or(s);
    if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        u64::from_str_radix(h, 16).ok()
    } else if let Some(b) = s.strip_prefix("0b").or_else(|| s.strip_prefix("0B")) {
        u64::from_str_radix(b, 2).ok()
    } else if s.len() > 1 && s.starts_with('0') && s.bytes().all(|b| b.is_ascii_digit()) {
        u64::from_str_radix(&s[1..], 8).ok()
    } else {
        s.parse::<u64>().ok()
    }
}

/// What a numeric literal denotes.
enum Lit {
    Int(u64),
    F32(f32),
    F64(f64),
}

fn parse_lit(s: &str) -> Option<Lit> {
    let hex = |h: &str, n: usize| (h.len() == n).then(|| u64::from_str_radix(h, 16).ok()).flatten();
    if let Some(h) = s.strip_prefix("0f").or_else(|| s.strip_prefix("0F")) {
        return hex(h, 8).map(|b| Lit::F32(f32::from_bits(b as u32)));
    }
    if let Some(h) = s.strip_prefix("0d").or_else(|| s.strip_prefix("0D")) {
        return hex(h, 16).map(|b| Lit::F64(f64::from_bits(b)));
    }
    if let Some(v) = parse_int(s) {
        return Some(Lit::Int(v));
    }
    if s.contains('.') || s.contains('e') || s.contains('E') {
        return s.parse::<f64>().ok().map(Lit::F64);
    }
    None
}

fn special(name: &str) -> Option<Sreg> {
    let dim = |s: &str| match s {
        "x" => Some(0u8),
        "y" => Some(1),
        "z" => Some(2),
        _ => None,
    };
    if let Some((base, d)) = name.rsplit_once('.') {
        let d = dim(d)?;
        return Some(match base {
            "%tid" => Sreg::Tid(d),
            "%ntid" => Sreg::Ntid(d),
            "%ctaid" => Sreg::Ctaid(d),
            "%nctaid" => Sreg::Nctaid(d),
            _ => return None,
        });
    }
    Some(match name {
        "%laneid" => Sreg::LaneId,
        "%warpid" => Sreg::WarpId,
        "%nwarpid" => Sreg::NWarpId,
        "%smid" => Sreg::SmId,
        "%nsmid" => Sreg::NSmId,
        "%gridid" => Sreg::GridId,
        "%lanemask_eq" => Sreg::LaneMaskEq,
        "%lanemask_lt" => Sreg::LaneMaskLt,
        "%lanemask_le" => Sreg::LaneMaskLe,
        "%lanemask_gt" => Sreg::LaneMaskGt,
        "%lanemask_ge" => Sreg::LaneMaskGe,
        "%clock" => Sreg::Clock,
        "%clock64" => Sreg::Clock64,
        "%globaltimer" => Sreg::GlobalTimer,
        _ => return None,
    })
}

/// Registers visible in one `{ }` scope: single names and `%name<N>` ranges.
#[derive(Default)]
struct Scope {
    single: HashMap<String, RegRef>,
    ranges: HashMap<String, (RegClass, u32, u32)>,
}

#[derive(Default)]
struct RegAlloc {
    scopes: Vec<Scope>,
    n_r32: u32,
    n_r64: u32,
    n_pred: u32,
}

impl RegAlloc {
    fn alloc(&mut self, class: RegClass, count: u32) -> u32 {
        let n = match class {
            RegClass::R32 => &mut self.n_r32,
            RegClass::R64 => &mut self.n_r64,
            RegClass::Pred => &mut self.n_pred,
        };
        let base = *n;
        *n += count;
        base
    }
    fn lookup(&self, name: &str) -> Option<RegRef> {
        for s in self.scopes.iter().rev() {
            if let Some(r) = s.single.get(name) {
                return Some(*r);
            }
            let split = name.trim_end_matches(|c: char| c.is_ascii_digit());
            if split.len() < name.len() {
                if let Some(&(class, base, count)) = s.ranges.get(split) {
                    let k: u32 = name[split.len()..].parse().ok()?;
                    if k < count {
                        return Some(RegRef { class, idx: base + k });
                    }
                }
            }
        }
        None
    }
}

/// Parse and decode a PTX module.
pub fn parse_module(text: &str) -> Result<Module, LoadError> {
    let toks = tokenize(text).map_err(|(line, msg)| LoadError { line, msg })?;
    let mut p = Parser { t: &toks, i: 0 };
    let mut version = (0, 0);
    let mut target = String::new();
    let mut target_line = 0;
    let mut module_shared: Vec<SharedDecl> = Vec::new();
    let mut kernels = Vec::new();
    let mut saw_address_size = false;
    while let Some(tok) = p.peek() {
        let line = p.line();
        let w = match tok {
            Tok::Word(w) => w.as_str(),
            other => return err(line, format!("expected a directive, found {}", show(other))),
        };
        p.i += 1;
        match w {
            ".version" => {
                let line = p.line();
                match p.next()? {
                    Tok::Num(n) => {
                        let (a, b) = n.split_once('.').unwrap_or((n, "0"));
                        version = (a.parse().unwrap_or(0), b.parse().unwrap_or(0));
                    }
                    other => return err(line, format!("bad .version {}", show(other))),
                }
            }
            ".target" => {
                target_line = line;
                target = p.word()?.to_string();
                while p.eat_p(',') {
                    let extra = p.word()?;
                    if extra == "debug" {
                        return err(line, ".target debug (code compiled with -G) is not supported");
                    }
                }
            }
            ".address_size" => {
                if p.num()? != 64 {
                    return err(line, "only .address_size 64 is supported");
                }
                saw_address_size = true;
            }
            ".visible" | ".weak" => {
                let next = p.peek_word();
                if next != Some(".entry") && next != Some(".func") {
                    return err(line, format!("{w} must precede .entry"));
                }
            }
            ".entry" => kernels.push(parse_entry(&mut p, &module_shared, text)?),
            ".extern" => match p.peek_word() {
                Some(".shared") => {
                    p.i += 1;
                    let mut d = parse_shared_decl(&mut p, line)?;
                    d.dynamic = true;
                    module_shared.push(d);
                }
                _ => return err(line, ".extern is only supported for dynamic .shared memory"),
            },
            ".shared" => module_shared.push(parse_shared_decl(&mut p, line)?),
            ".func" => {
                return err(
                    line,
                    "device functions (.func) and calls are not supported by the simulator: \
                     mark the function __forceinline__",
                )
            }
            ".file" => p.skip_line(line),
            ".pragma" => {
                p.next()?;
                p.expect_p(';')?;
            }
            ".global" | ".const" | ".local" | ".tex" | ".surf" | ".samplerref" | ".texref" | ".section" => {
                return err(line, format!("module-scope {w} is not supported by the simulator"))
            }
            other => return err(line, format!("unknown directive `{other}`")),
        }
    }
    if !saw_address_size && !kernels.is_empty() {
        return err(1, "missing .address_size 64");
    }
    Ok(Module {
        version,
        target,
        target_line,
        kernels,
        lines: text.lines().map(str::to_string).collect(),
    })
}

/// `.shared [.align N] .TYPE NAME[SIZE];` (after the `.shared` word).
fn parse_shared_decl(p: &mut Parser, line: u32) -> R<SharedDecl> {
    let mut align = 0;
    let mut ty = None;
    let mut name = None;
    while name.is_none() {
        let w = p.word()?;
        if w == ".align" {
            align = p.num()? as u32;
        } else if let Some(t) = w.strip_prefix('.').and_then(Ty::parse) {
            ty = Some(t);
        } else if w.starts_with('.') {
            return err(line, format!("unsupported qualifier {w} on a .shared variable"));
        } else {
            name = Some(w.to_string());
        }
    }
    let ty = ty.ok_or_else(|| LoadError {
        line,
        msg: "a .shared variable needs a type".into(),
    })?;
    let mut count = 1u64;
    let mut dynamic = false;
    if p.eat_p('[') {
        if p.eat_p(']') {
            dynamic = true;
            count = 0;
        } else {
            count = p.num()?;
            p.expect_p(']')?;
        }
    }
    if p.is_p('=') {
        return err(line, "initialised .shared variables are not supported");
    }
    p.expect_p(';')?;
    let size = (count * ty.bytes() as u64) as u32;
    Ok(SharedDecl {
        name: name.unwrap(),
        size,
        align: align.max(ty.bytes()).max(1),
        dynamic,
        line,
    })
}

fn parse_entry(p: &mut Parser, module_shared: &[SharedDecl], text: &str) -> R<Kernel> {
    let _ = text;
    let entry_line = p.line();
    let name = p.word()?.to_string();
    // Parameters.
    let mut params = Vec::new();
    let mut offset = 0u32;
    p.expect_p('(')?;
    if !p.eat_p(')') {
        loop {
            let line = p.line();
            if p.word()? != ".param" {
                return err(line, "expected .param");
            }
            let mut align = 0u32;
            let mut ty: Option<Ty> = None;
            let pname;
            loop {
                let w = p.word()?;
                match w {
                    ".align" => align = p.num()? as u32,
                    ".ptr" | ".global" | ".const" | ".shared" | ".local" => {}
                    _ if w.starts_with('.') => {
                        ty = Some(w.strip_prefix('.').and_then(Ty::parse).ok_or_else(|| LoadError {
                            line,
                            msg: format!("unknown parameter type {w}"),
                        })?)
                    }
                    _ => {
                        pname = w.to_string();
                        break;
                    }
                }
            }
            let ty = ty.ok_or_else(|| LoadError {
                line,
                msg: format!("parameter {pname} has no type"),
            })?;
            let mut count = 1u32;
            if p.eat_p('[') {
                count = p.num()? as u32;
                p.expect_p(']')?;
            }
            let align = align.max(ty.bytes()).max(1);
            offset = offset.next_multiple_of(align);
            params.push(Param {
                name: pname,
                offset,
                size: count * ty.bytes(),
                align,
            });
            offset += count * ty.bytes();
            if p.eat_p(')') {
                break;
            }
            p.expect_p(',')?;
        }
    }
    let param_bytes = offset;
    // Performance-tuning directives.
    let mut max_threads = None;
    let mut reqntid = None;
    loop {
        let line = p.line();
        match p.peek_word() {
            Some(d @ (".maxntid" | ".reqntid")) => {
                p.i += 1;
                let mut dims = [1u32; 3];
                dims[0] = p.num()? as u32;
                for dim in dims.iter_mut().skip(1) {
                    if !p.eat_p(',') {
                        break;
                    }
                    *dim = p.num()? as u32;
                }
                max_threads = Some(dims.iter().product());
                if d == ".reqntid" {
                    reqntid = Some(dims);
                }
            }
            Some(".minnctapersm") | Some(".maxnreg") => {
                p.i += 1;
                p.num()?;
            }
            Some(".noreturn") => p.i += 1,
            Some(".pragma") => {
                p.i += 1;
                p.next()?;
                p.expect_p(';')?;
            }
            Some(w) if w.starts_with('.') => return err(line, format!("unsupported kernel directive {w}")),
            _ => break,
        }
    }
    p.expect_p('{')?;

    // Body, first pass: declarations, labels and instructions with registers resolved.
    let mut regs = RegAlloc::default();
    regs.scopes.push(Scope::default());
    let mut depth = 1;
    let mut local_shared: Vec<SharedDecl> = Vec::new();
    let mut labels: HashMap<String, u32> = HashMap::new();
    let mut instrs: Vec<SynInstr> = Vec::new();
    while depth > 0 {
        let line = p.line();
        let tok = p.next()?;
        match tok {
            Tok::P('{') => {
                depth += 1;
                regs.scopes.push(Scope::default());
            }
            Tok::P('}') => {
                depth -= 1;
                regs.scopes.pop();
            }
            Tok::P('@') => {
                let neg = p.eat_p('!');
                let pw = p.word()?;
                let r = regs
                    .lookup(pw)
                    .filter(|r| r.class == RegClass::Pred)
                    .ok_or_else(|| LoadError {
                        line,
                        msg: format!("guard {pw} is not a declared predicate"),
                    })?;
                let g = if neg { Sy::Not(Box::new(Sy::Reg(r))) } else { Sy::Reg(r) };
                let opcode = p.word()?.to_string();
                refuse_call(&opcode, line)?;
                let ops = parse_operands(p, &regs)?;
                instrs.push(SynInstr {
                    guard: Some(g),
                    opcode,
                    ops,
                    line,
                });
            }
            Tok::Word(w) if w == ".reg" => {
                let tw = p.word()?;
                let ty = tw.strip_prefix('.').and_then(Ty::parse).ok_or_else(|| LoadError {
                    line,
                    msg: format!("unknown register type {tw}"),
                })?;
                if ty == Ty::F16 {
                    return err(line, "f16 registers are not supported by the simulator");
                }
                loop {
                    let name = p.word()?.to_string();
                    let scope = regs.scopes.last_mut().expect("scope");
                    if p.eat_p('<') {
                        let n = p.num()? as u32;
                        p.expect_p('>')?;
                        let base = regs.alloc(ty.class(), n);
                        regs.scopes
                            .last_mut()
                            .expect("scope")
                            .ranges
                            .insert(name, (ty.class(), base, n));
                    } else {
                        let _ = scope;
                        let idx = regs.alloc(ty.class(), 1);
                        regs.scopes
                            .last_mut()
                            .expect("scope")
                            .single
                            .insert(name, RegRef { class: ty.class(), idx });
                    }
                    if !p.eat_p(',') {
                        break;
                    }
                }
                p.expect_p(';')?;
            }
            Tok::Word(w) if w == ".shared" => local_shared.push(parse_shared_decl(p, line)?),
            Tok::Word(w) if w == ".pragma" => {
                p.next()?;
                p.expect_p(';')?;
            }
            Tok::Word(w) if w == ".loc" || w == ".file" => p.skip_line(line),
            Tok::Word(w) if w.starts_with('.') => {
                return err(line, format!("unsupported directive {w} in a kernel body"));
            }
            Tok::Word(w) if p.is_p(':') => {
                p.i += 1;
                labels.insert(w.clone(), instrs.len() as u32);
            }
            Tok::Word(w) => {
                refuse_call(w, line)?;
                let ops = parse_operands(p, &regs)?;
                instrs.push(SynInstr {
                    guard: None,
                    opcode: w.clone(),
                    ops,
                    line,
                });
            }
            other => return err(line, format!("unexpected {} in a kernel body", show(other))),
        }
    }

    // Shared memory layout: the kernel's own variables, then the module-scope ones it names,
    // then dynamic shared memory at the end.
    let mut used_module: Vec<&SharedDecl> = Vec::new();
    for si in &instrs {
        for op in &si.ops {
            visit_syms(op, &mut |s| {
                if !local_shared.iter().any(|d| d.name == s) && !used_module.iter().any(|d| d.name == s) {
                    if let Some(d) = module_shared.iter().find(|d| d.name == s) {
                        used_module.push(d);
                    }
                }
            });
        }
    }
    let mut shared = Vec::new();
    let mut dyn_names = Vec::new();
    let mut off = 0u32;
    let mut dyn_align = 1;
    for d in local_shared.iter().chain(used_module.iter().copied()) {
        if d.dynamic {
            dyn_names.push(d.name.clone());
            dyn_align = dyn_align.max(d.align);
            continue;
        }
        off = off.next_multiple_of(d.align);
        shared.push(SharedVar {
            name: d.name.clone(),
            offset: off,
            size: d.size,
            align: d.align,
        });
        off += d.size;
        let _ = d.line;
    }
    let static_shared_bytes = off;
    let dynamic_shared_offset = off.next_multiple_of(dyn_align.max(16));

    // Second pass: decode.
    let ctx = Ctx {
        params: &params,
        shared: &shared,
        dyn_names: &dyn_names,
        dyn_off: dynamic_shared_offset,
        labels: &labels,
    };
    let mut code = Vec::with_capacity(instrs.len() + 1);
    for si in &instrs {
        let guard = match &si.guard {
            None => PredSrc::True,
            Some(g) => ctx.pred_src(g, si.line)?,
        };
        let op = decode(&ctx, &si.opcode, &si.ops, si.line)?;
        code.push(Instr {
            class: IClass::of(&op),
            op,
            guard,
            line: si.line,
        });
    }
    // Falling off the end of a kernel ends its threads (as a `ret` would).
    let end_line = p.t.get(p.i.saturating_sub(1)).map_or(entry_line, |t| t.line);
    code.push(Instr {
        op: Op::Exit,
        class: IClass::Ctrl,
        guard: PredSrc::True,
        line: end_line,
    });
    Ok(Kernel {
        name,
        params,
        param_bytes,
        code,
        n_r32: regs.n_r32,
        n_r64: regs.n_r64,
        n_pred: regs.n_pred,
        shared,
        static_shared_bytes,
        dynamic_shared_offset,
        uses_dynamic_shared: !dyn_names.is_empty(),
        max_threads,
        reqntid,
    })
}

/// `call` (to a `.func`) has its own operand syntax; say what it is before trying to parse it.
fn refuse_call(opcode: &str, line: u32) -> R<()> {
    if opcode == "call" || opcode.starts_with("call.") {
        return err(
            line,
            format!("`{opcode}`: calls to device functions are not supported by the simulator (mark the function __forceinline__)"),
        );
    }
    Ok(())
}

fn visit_syms(op: &Sy, f: &mut impl FnMut(&str)) {
    match op {
        Sy::Sym(s) => f(s),
        Sy::Addr { base: Some(b), .. } => visit_syms(b, f),
        Sy::Vec(v) => v.iter().for_each(|o| visit_syms(o, f)),
        Sy::Pair(a, b) => {
            visit_syms(a, f);
            visit_syms(b, f)
        }
        Sy::Not(a) => visit_syms(a, f),
        _ => {}
    }
}

/// Operands up to the closing `;`.
fn parse_operands(p: &mut Parser, regs: &RegAlloc) -> R<Vec<Sy>> {
    let mut ops = Vec::new();
    if p.eat_p(';') {
        return Ok(ops);
    }
    loop {
        ops.push(parse_operand(p, regs)?);
        if p.eat_p(';') {
            return Ok(ops);
        }
        p.expect_p(',')?;
    }
}

fn parse_operand(p: &mut Parser, regs: &RegAlloc) -> R<Sy> {
    let first = parse_atom(p, regs)?;
    if p.eat_p('|') {
        let second = parse_atom(p, regs)?;
        return Ok(Sy::Pair(Box::new(first), Box::new(second)));
    }
    Ok(first)
}

fn parse_atom(p: &mut Parser, regs: &RegAlloc) -> R<Sy> {
    let line = p.line();
    match p.next()? {
        Tok::P('!') => Ok(Sy::Not(Box::new(parse_atom(p, regs)?))),
        Tok::P('-') => match p.next()? {
            Tok::Num(n) => Ok(Sy::Num {
                text: n.clone(),
                neg: true,
            }),
            other => err(line, format!("expected a number after `-`, found {}", show(other))),
        },
        Tok::Num(n) => Ok(Sy::Num {
            text: n.clone(),
            neg: false,
        }),
        Tok::P('{') => {
            let mut v = Vec::new();
            loop {
                v.push(parse_atom(p, regs)?);
                if p.eat_p('}') {
                    return Ok(Sy::Vec(v));
                }
                p.expect_p(',')?;
            }
        }
        Tok::P('[') => {
            let mut base = None;
            let mut off: i64 = 0;
            match p.next()? {
                Tok::Word(w) => base = Some(Box::new(name_operand(w, regs, line)?)),
                Tok::Num(n) => {
                    off = parse_int(n).ok_or_else(|| LoadError {
                        line,
                        msg: format!("bad address {n}"),
                    })? as i64
                }
                other => return err(line, format!("bad address operand {}", show(other))),
            }
            while !p.eat_p(']') {
                let sign = match p.next()? {
                    Tok::P('+') => 1i64,
                    Tok::P('-') => -1,
                    other => return err(line, format!("bad address operand {}", show(other))),
                };
                let mut s = sign;
                if p.eat_p('-') {
                    s = -s;
                }
                let v = p.num()? as i64;
                off = off.wrapping_add(s.wrapping_mul(v));
            }
            Ok(Sy::Addr { base, off })
        }
        Tok::Word(w) => name_operand(w, regs, line),
        other => err(line, format!("unexpected operand {}", show(other))),
    }
}

fn name_operand(w: &str, regs: &RegAlloc, line: u32) -> R<Sy> {
    if w == "_" {
        return Ok(Sy::Sink);
    }
    if w.starts_with('%') {
        if let Some(r) = regs.lookup(w) {
            return Ok(Sy::Reg(r));
        }
        if let Some(s) = special(w) {
            return Ok(Sy::Special(s));
        }
        return err(
            line,
            format!("register {w} is not declared (or is an unsupported special register)"),
        );
    }
    Ok(Sy::Sym(w.to_string()))
}

/// Symbols a kernel body can name.
struct Ctx<'a> {
    params: &'a [Param],
    shared: &'a [SharedVar],
    dyn_names: &'a [String],
    dyn_off: u32,
    labels: &'a HashMap<String, u32>,
}

impl Ctx<'_> {
    /// The address of a symbol in its state space (parameter buffer or shared memory offset).
    fn sym_addr(&self, s: &str, line: u32) -> R<(Space, u64)> {
        if let Some(p) = self.params.iter().find(|p| p.name == s) {
            return Ok((Space::Param, p.offset as u64));
        }
        if let Some(v) = self.shared.iter().find(|v| v.name == s) {
            return Ok((Space::Shared, v.offset as u64));
        }
        if self.dyn_names.iter().any(|n| n == s) {
            return Ok((Space::Shared, self.dyn_off as u64));
        }
        err(line, format!("unknown symbol `{s}`"))
    }

    fn src(&self, sy: &Sy, ty: Ty, line: u32) -> R<Src> {
        match sy {
            Sy::Reg(r) => Ok(match r.class {
                RegClass::R32 => Src::R32(r.idx),
                RegClass::R64 => Src::R64(r.idx),
                RegClass::Pred => Src::Pred(r.idx),
            }),
            Sy::Special(s) => Ok(Src::Sreg(*s)),
            Sy::Num { text, neg } => imm(text, *neg, ty, line).map(Src::Imm),
            Sy::Sym(s) => Ok(Src::Imm(self.sym_addr(s, line)?.1)),
            other => err(line, format!("expected a register or immediate, found {other:?}")),
        }
    }

    fn dst(&self, sy: &Sy, line: u32) -> R<Dst> {
        match sy {
            Sy::Reg(r) => Ok(match r.class {
                RegClass::R32 => Dst::R32(r.idx),
                RegClass::R64 => Dst::R64(r.idx),
                RegClass::Pred => Dst::Pred(r.idx),
            }),
            Sy::Sink => Ok(Dst::Sink),
            other => err(line, format!("expected a destination register, found {other:?}")),
        }
    }

    fn pred_src(&self, sy: &Sy, line: u32) -> R<PredSrc> {
        match sy {
            Sy::Reg(RegRef {
                class: RegClass::Pred,
                idx,
            }) => Ok(PredSrc::Reg { idx: *idx, neg: false }),
            Sy::Not(inner) => match self.pred_src(inner, line)? {
                PredSrc::Reg { idx, neg } => Ok(PredSrc::Reg { idx, neg: !neg }),
                PredSrc::True => err(line, "cannot negate a constant predicate"),
            },
            Sy::Num { text, neg: false } if text == "1" => Ok(PredSrc::True),
            other => err(line, format!("expected a predicate, found {other:?}")),
        }
    }

    /// `[base+off]` for a state space: `(base, offset)`.
    fn addr(&self, sy: &Sy, space: Space, line: u32) -> R<(Src, i64)> {
        let Sy::Addr { base, off } = sy else {
            return err(line, format!("expected an address [..], found {sy:?}"));
        };
        match base.as_deref() {
            None => Ok((Src::Imm(0), *off)),
            Some(Sy::Reg(r)) => Ok((
                match r.class {
                    RegClass::R32 => Src::R32(r.idx),
                    RegClass::R64 => Src::R64(r.idx),
                    RegClass::Pred => return err(line, "a predicate cannot be an address"),
                },
                *off,
            )),
            Some(Sy::Sym(s)) => {
                let (sp, a) = self.sym_addr(s, line)?;
                let ok = sp == space || (space == Space::Generic && sp != Space::Param);
                if !ok {
                    return err(line, format!("`{s}` is in {sp:?} space, not {space:?}"));
                }
                if space == Space::Generic {
                    return err(
                        line,
                        "generic access to a named variable needs cvta (not supported directly)",
                    );
                }
                Ok((Src::Imm(a), *off))
            }
            Some(other) => err(line, format!("bad address base {other:?}")),
        }
    }

    fn label(&self, sy: &Sy, line: u32) -> R<u32> {
        match sy {
            Sy::Sym(s) => self.labels.get(s).copied().ok_or_else(|| LoadError {
                line,
                msg: format!("unknown label {s}"),
            }),
            other => err(line, format!("expected a label, found {other:?}")),
        }
    }
}

/// An immediate as the raw bits of type `ty`.
fn imm(text: &str, neg: bool, ty: Ty, line: u32) -> R<u64> {
    let lit = parse_lit(text).ok_or_else(|| LoadError {
        line,
        msg: format!("bad literal `{text}`"),
    })?;
    Ok(match ty {
        Ty::F32 => {
            let v = match lit {
                Lit::F32(f) => f,
                Lit::F64(d) => d as f32,
                Lit::Int(i) => i as f32,
            };
            (if neg { -v } else { v }).to_bits() as u64
        }
        Ty::F64 => {
            let v = match lit {
                Lit::F32(f) => f as f64,
                Lit::F64(d) => d,
                Lit::Int(i) => i as f64,
            };
            (if neg { -v } else { v }).to_bits()
        }
        Ty::F16 => return err(line, "f16 immediates are not supported"),
        _ => match lit {
            Lit::Int(i) => {
                // The value must fit the operand, as unsigned or (negated) as signed: never
                // truncated silently.
                let bits = ty.bits();
                if bits < 64 && !(if neg { i <= 1u64 << (bits - 1) } else { i < 1u64 << bits }) {
                    let sign = if neg { "-" } else { "" };
                    return err(line, format!("the literal {sign}{text} does not fit a .{ty:?} operand"));
                }
                if neg {
                    (i as i64).wrapping_neg() as u64
                } else {
                    i
                }
            }
            // A float literal given to a bit-size type keeps its bits (`mov.b32 %r, 0f3F800000`).
            Lit::F32(f) if ty.bits() == 32 && !neg => f.to_bits() as u64,
            Lit::F64(d) if ty.bits() == 64 && !neg => d.to_bits(),
            _ => return err(line, format!("a floating-point literal for a .{ty:?} operand")),
        },
    })
}

/// The modifiers of an opcode (`ld.global.nc.v4.f32` → types `[f32]`, flags
/// `[global, nc, v4]`). Every flag must be consumed by the opcode's decoder: one left over is an
/// unknown modifier, and an error.
struct Mods<'a> {
    types: Vec<Ty>,
    flags: Vec<&'a str>,
    line: u32,
    opcode: &'a str,
}

impl<'a> Mods<'a> {
    fn new(opcode: &'a str, line: u32) -> (&'a str, Mods<'a>) {
        let mut parts = opcode.split('.');
        let name = parts.next().unwrap_or("");
        let mut types = Vec::new();
        let mut flags = Vec::new();
        for part in parts {
            match Ty::parse(part) {
                Some(t) => types.push(t),
                None => flags.push(part),
            }
        }
        (
            name,
            Mods {
                types,
                flags,
                line,
                opcode,
            },
        )
    }
    fn has(&mut self, f: &str) -> bool {
        if let Some(i) = self.flags.iter().position(|x| *x == f) {
            self.flags.remove(i);
            true
        } else {
            false
        }
    }
    fn one_of(&mut self, options: &[&'a str]) -> Option<&'a str> {
        for o in options {
            if self.has(o) {
                return Some(o);
            }
        }
        None
    }
    fn ty(&mut self) -> R<Ty> {
        if self.types.len() != 1 {
            return err(self.line, format!("`{}` needs exactly one type", self.opcode));
        }
        Ok(self.types[0])
    }
    fn done(&self) -> R<()> {
        if let Some(f) = self.flags.first() {
            return err(self.line, format!("unsupported modifier .{f} in `{}`", self.opcode));
        }
        Ok(())
    }
    fn rnd(&mut self) -> Option<Rnd> {
        self.one_of(&["rn", "rz", "rm", "rp"]).map(|r| match r {
            "rn" => Rnd::Rn,
            "rz" => Rnd::Rz,
            "rm" => Rnd::Rm,
            _ => Rnd::Rp,
        })
    }
}

fn want(ops: &[Sy], n: usize, opcode: &str, line: u32) -> R<()> {
    if ops.len() != n {
        return err(line, format!("`{opcode}` takes {n} operands, found {}", ops.len()));
    }
    Ok(())
}

fn prec_of(ty: Ty, line: u32) -> R<Prec> {
    match ty {
        Ty::F32 => Ok(Prec::F32),
        Ty::F64 => Ok(Prec::F64),
        Ty::F16 => err(line, "f16 arithmetic is not supported by the simulator"),
        _ => err(line, format!("expected a floating-point type, found .{ty:?}")),
    }
}

fn space_of(f: &str) -> Space {
    match f {
        "global" => Space::Global,
        "shared" => Space::Shared,
        "param" => Space::Param,
        "local" => Space::Local,
        "const" => Space::Const,
        _ => Space::Generic,
    }
}

fn decode(c: &Ctx, opcode: &str, ops: &[Sy], line: u32) -> R<Op> {
    let (name, mut m) = Mods::new(opcode, line);
    let op = match name {
        "add" | "sub" | "mul" | "div" | "rem" | "min" | "max" | "and" | "or" | "xor" | "shl" | "shr" | "copysign" => {
            want(ops, 3, opcode, line)?;
            let ty = m.ty()?;
            if ty.is_float() {
                let prec = prec_of(ty, line)?;
                let op = match name {
                    "add" => FBinOp::Add,
                    "sub" => FBinOp::Sub,
                    "mul" => FBinOp::Mul,
                    "div" => FBinOp::Div,
                    "min" => FBinOp::Min,
                    "max" => FBinOp::Max,
                    "copysign" => FBinOp::Copysign,
                    _ => return err(line, format!("`{opcode}` is not a floating-point instruction")),
                };
                let explicit = m.rnd();
                let approx = m.one_of(&["approx", "full"]).is_some();
                if op == FBinOp::Div && explicit.is_none() && !approx {
                    return err(line, "div on floats needs .rn/.rz/.rm/.rp, .approx or .full");
                }
                let fm = FMods {
                    prec,
                    rnd: explicit.unwrap_or(Rnd::Rn),
                    approx,
                    ftz: m.has("ftz"),
                    sat: m.has("sat"),
                    nan: m.has("NaN"),
                };
                if fm.prec == Prec::F64 && fm.rnd != Rnd::Rn {
                    return err(
                        line,
                        format!("`{opcode}`: f64 arithmetic with a directed rounding mode is not supported"),
                    );
                }
                m.done()?;
                Op::FBin {
                    op,
                    m: fm,
                    d: c.dst(&ops[0], line)?,
                    a: c.src(&ops[1], ty, line)?,
                    b: c.src(&ops[2], ty, line)?,
                }
            } else if ty == Ty::Pred && matches!(name, "and" | "or" | "xor") {
                m.done()?;
                let op = match name {
                    "and" => PredOp::And,
                    "or" => PredOp::Or,
                    _ => PredOp::Xor,
                };
                Op::PredLogic {
                    op,
                    d: c.dst(&ops[0], line)?,
                    a: c.pred_src(&ops[1], line)?,
                    b: c.pred_src(&ops[2], line)?,
                }
            } else {
                let mut op = match name {
                    "add" => IntOp::Add,
                    "sub" => IntOp::Sub,
                    "mul" => IntOp::MulLo,
                    "div" => IntOp::Div,
                    "rem" => IntOp::Rem,
                    "min" => IntOp::Min,
                    "max" => IntOp::Max,
                    "and" => IntOp::And,
                    "or" => IntOp::Or,
                    "xor" => IntOp::Xor,
                    "shl" => IntOp::Shl,
                    "shr" => IntOp::Shr,
                    _ => return err(line, format!("`{opcode}` needs a floating-point type")),
                };
                let b_ty = if matches!(op, IntOp::Shl | IntOp::Shr) {
                    Ty::U32
                } else {
                    ty
                };
                if name == "mul" {
                    match m.one_of(&["lo", "hi", "wide"]) {
                        Some("lo") => {}
                        Some("hi") => op = IntOp::MulHi,
                        Some(_) => {
                            m.done()?;
                            if ty.bits() > 32 {
                                return err(line, "mul.wide takes a 16- or 32-bit type");
                            }
                            return Ok(Op::MulWide {
                                ty,
                                d: c.dst(&ops[0], line)?,
                                a: c.src(&ops[1], ty, line)?,
                                b: c.src(&ops[2], ty, line)?,
                            });
                        }
                        None => return err(line, "integer mul needs .lo, .hi or .wide"),
                    }
                }
                m.done()?;
                Op::Int {
                    op,
                    ty,
                    d: c.dst(&ops[0], line)?,
                    a: c.src(&ops[1], ty, line)?,
                    b: c.src(&ops[2], b_ty, line)?,
                }
            }
        }
        "mad" | "fma" => {
            want(ops, 4, opcode, line)?;
            let ty = m.ty()?;
            if ty.is_float() {
                let prec = prec_of(ty, line)?;
                let rnd = m.rnd().ok_or_else(|| LoadError {
                    line,
                    msg: format!("`{opcode}` needs a rounding mode"),
                })?;
                if prec == Prec::F64 && rnd != Rnd::Rn {
                    return err(
                        line,
                        format!("`{opcode}`: f64 arithmetic with a directed rounding mode is not supported"),
                    );
                }
                let fm = FMods {
                    prec,
                    rnd,
                    approx: false,
                    ftz: m.has("ftz"),
                    sat: m.has("sat"),
                    nan: false,
                };
                m.done()?;
                Op::Fma {
                    m: fm,
                    d: c.dst(&ops[0], line)?,
                    a: c.src(&ops[1], ty, line)?,
                    b: c.src(&ops[2], ty, line)?,
                    c: c.src(&ops[3], ty, line)?,
                }
            } else {
                if name == "fma" {
                    return err(line, "fma needs a floating-point type");
                }
                let (hi, wide) = match m.one_of(&["lo", "hi", "wide"]) {
                    Some("lo") => (false, false),
                    Some("hi") => (true, false),
                    Some(_) => (false, true),
                    None => return err(line, "integer mad needs .lo, .hi or .wide"),
                };
                m.done()?;
                let c_ty = if wide {
                    match ty {
                        Ty::U16 => Ty::U32,
                        Ty::S16 => Ty::S32,
                        Ty::U32 => Ty::U64,
                        _ => Ty::S64,
                    }
                } else {
                    ty
                };
                Op::Mad {
                    ty,
                    hi,
                    wide,
                    d: c.dst(&ops[0], line)?,
                    a: c.src(&ops[1], ty, line)?,
                    b: c.src(&ops[2], ty, line)?,
                    c: c.src(&ops[3], c_ty, line)?,
                }
            }
        }
        "neg" | "abs" | "not" | "cnot" | "popc" | "clz" | "brev" | "sqrt" | "rcp" | "rsqrt" | "ex2" | "lg2" | "sin"
        | "cos" | "tanh" => {
            want(ops, 2, opcode, line)?;
            let ty = m.ty()?;
            if ty.is_float() {
                let prec = prec_of(ty, line)?;
                let op = match name {
                    "neg" => FUnOp::Neg,
                    "abs" => FUnOp::Abs,
                    "sqrt" => FUnOp::Sqrt,
                    "rcp" => FUnOp::Rcp,
                    "rsqrt" => FUnOp::Rsqrt,
                    "ex2" => FUnOp::Ex2,
                    "lg2" => FUnOp::Lg2,
                    "sin" => FUnOp::Sin,
                    "cos" => FUnOp::Cos,
                    "tanh" => FUnOp::Tanh,
                    _ => return err(line, format!("`{opcode}` is not a floating-point instruction")),
                };
                let rnd = m.rnd();
                let approx = m.has("approx");
                let needs_mode = matches!(op, FUnOp::Sqrt | FUnOp::Rcp);
                let approx_only = matches!(
                    op,
                    FUnOp::Rsqrt | FUnOp::Ex2 | FUnOp::Lg2 | FUnOp::Sin | FUnOp::Cos | FUnOp::Tanh
                );
                if needs_mode && rnd.is_none() && !approx {
                    return err(line, format!("`{opcode}` needs .approx or a rounding mode"));
                }
                if approx_only && !approx {
                    return err(line, format!("`{opcode}` needs .approx"));
                }
                if approx_only && prec == Prec::F64 && op != FUnOp::Rsqrt {
                    return err(line, format!("`{opcode}` on f64 is not supported"));
                }
                if needs_mode && !approx && rnd != Some(Rnd::Rn) && prec == Prec::F32 {
                    // sqrt/rcp with directed rounding: emulated through f64 below only for rn.
                    return err(
                        line,
                        format!("`{opcode}` with a directed rounding mode is not supported"),
                    );
                }
                if needs_mode && !approx && rnd != Some(Rnd::Rn) && prec == Prec::F64 {
                    return err(
                        line,
                        format!("`{opcode}` with a directed rounding mode is not supported"),
                    );
                }
                let fm = FMods {
                    prec,
                    rnd: rnd.unwrap_or(Rnd::Rn),
                    approx,
                    ftz: m.has("ftz"),
                    sat: false,
                    nan: false,
                };
                m.done()?;
                Op::FUn {
                    op,
                    m: fm,
                    d: c.dst(&ops[0], line)?,
                    a: c.src(&ops[1], ty, line)?,
                }
            } else if ty == Ty::Pred && name == "not" {
                m.done()?;
                Op::PredLogic {
                    op: PredOp::Not,
                    d: c.dst(&ops[0], line)?,
                    a: c.pred_src(&ops[1], line)?,
                    b: PredSrc::True,
                }
            } else {
                let op = match name {
                    "neg" => IntUnOp::Neg,
                    "abs" => IntUnOp::Abs,
                    "not" => IntUnOp::Not,
                    "cnot" => IntUnOp::Cnot,
                    "popc" => IntUnOp::Popc,
                    "clz" => IntUnOp::Clz,
                    "brev" => IntUnOp::Brev,
                    _ => return err(line, format!("`{opcode}` needs a floating-point type")),
                };
                m.done()?;
                Op::IntUn {
                    op,
                    ty,
                    d: c.dst(&ops[0], line)?,
                    a: c.src(&ops[1], ty, line)?,
                }
            }
        }
        "bfe" => {
            want(ops, 4, opcode, line)?;
            let ty = m.ty()?;
            m.done()?;
            Op::Bfe {
                ty,
                d: c.dst(&ops[0], line)?,
                a: c.src(&ops[1], ty, line)?,
                b: c.src(&ops[2], Ty::U32, line)?,
                c: c.src(&ops[3], Ty::U32, line)?,
            }
        }
        "bfi" => {
            want(ops, 5, opcode, line)?;
            let ty = m.ty()?;
            m.done()?;
            Op::Bfi {
                ty,
                d: c.dst(&ops[0], line)?,
                a: c.src(&ops[1], ty, line)?,
                b: c.src(&ops[2], ty, line)?,
                pos: c.src(&ops[3], Ty::U32, line)?,
                len: c.src(&ops[4], Ty::U32, line)?,
            }
        }
        "setp" => {
            let ty = m.ty()?;
            let cmp = match m.one_of(&[
                "eq", "ne", "lt", "le", "gt", "ge", "lo", "ls", "hi", "hs", "equ", "neu", "ltu", "leu", "gtu", "geu",
                "num", "nan",
            ]) {
                Some(s) => match s {
                    "eq" => Cmp::Eq,
                    "ne" => Cmp::Ne,
                    "lt" => Cmp::Lt,
                    "le" => Cmp::Le,
                    "gt" => Cmp::Gt,
                    "ge" => Cmp::Ge,
                    "lo" => Cmp::Lo,
                    "ls" => Cmp::Ls,
                    "hi" => Cmp::Hi,
                    "hs" => Cmp::Hs,
                    "equ" => Cmp::Equ,
                    "neu" => Cmp::Neu,
                    "ltu" => Cmp::Ltu,
                    "leu" => Cmp::Leu,
                    "gtu" => Cmp::Gtu,
                    "geu" => Cmp::Geu,
                    "num" => Cmp::Num,
                    _ => Cmp::Nan,
                },
                None => return err(line, "setp needs a comparison"),
            };
            if !ty.is_float()
                && matches!(
                    cmp,
                    Cmp::Equ | Cmp::Neu | Cmp::Ltu | Cmp::Leu | Cmp::Gtu | Cmp::Geu | Cmp::Num | Cmp::Nan
                )
            {
                return err(line, "unordered comparisons need a floating-point type");
            }
            if ty == Ty::F16 {
                return err(line, "f16 comparisons are not supported");
            }
            let bool_op = m.one_of(&["and", "or", "xor"]).map(|b| match b {
                "and" => BoolOp::And,
                "or" => BoolOp::Or,
                _ => BoolOp::Xor,
            });
            let ftz = m.has("ftz");
            m.done()?;
            let n = if bool_op.is_some() { 4 } else { 3 };
            want(ops, n, opcode, line)?;
            let (p, q) = match &ops[0] {
                Sy::Pair(p, q) => (c.dst(p, line)?, c.dst(q, line)?),
                other => (c.dst(other, line)?, Dst::Sink),
            };
            let comb = match bool_op {
                Some(b) => Some((b, c.pred_src(&ops[3], line)?)),
                None => None,
            };
            Op::Setp {
                cmp,
                ty,
                ftz,
                comb,
                p,
                q,
                a: c.src(&ops[1], ty, line)?,
                b: c.src(&ops[2], ty, line)?,
            }
        }
        "selp" => {
            want(ops, 4, opcode, line)?;
            let ty = m.ty()?;
            m.done()?;
            Op::Selp {
                ty,
                d: c.dst(&ops[0], line)?,
                a: c.src(&ops[1], ty, line)?,
                b: c.src(&ops[2], ty, line)?,
                c: c.pred_src(&ops[3], line)?,
            }
        }
        "cvt" => {
            want(ops, 2, opcode, line)?;
            if m.types.len() != 2 {
                return err(line, "cvt needs a destination and a source type");
            }
            let (dty, sty) = (m.types[0], m.types[1]);
            if dty == Ty::F16 || sty == Ty::F16 || dty == Ty::Pred || sty == Ty::Pred {
                return err(line, format!("`{opcode}` is not supported"));
            }
            let irnd = m.one_of(&["rni", "rzi", "rmi", "rpi"]).map(|r| match r {
                "rni" => IRnd::Rni,
                "rzi" => IRnd::Rzi,
                "rmi" => IRnd::Rmi,
                _ => IRnd::Rpi,
            });
            let rnd = m.rnd();
            let sat = m.has("sat");
            let ftz = m.has("ftz");
            m.done()?;
            // PTX requires a rounding modifier exactly where precision can be lost.
            let f_to_i = sty.is_float() && !dty.is_float();
            let f_to_f_same = sty.is_float() && dty == sty;
            if f_to_i && irnd.is_none() {
                return err(line, "cvt from float to integer needs .rni/.rzi/.rmi/.rpi");
            }
            if irnd.is_some() && !(f_to_i || f_to_f_same) {
                return err(line, "integer rounding (.rni ...) applies only to float sources");
            }
            Op::Cvt {
                dty,
                sty,
                rnd,
                irnd,
                sat,
                ftz,
                d: c.dst(&ops[0], line)?,
                a: c.src(&ops[1], sty, line)?,
            }
        }
        "mov" => {
            want(ops, 2, opcode, line)?;
            let ty = m.ty()?;
            m.done()?;
            match (&ops[0], &ops[1]) {
                (d, Sy::Vec(v)) if v.len() == 2 => {
                    let half = ty.bits() / 2;
                    let hty = if half == 32 { Ty::B32 } else { Ty::B16 };
                    Op::MovPack {
                        half_bits: half,
                        d: c.dst(d, line)?,
                        lo: c.src(&v[0], hty, line)?,
                        hi: c.src(&v[1], hty, line)?,
                    }
                }
                (Sy::Vec(v), a) if v.len() == 2 => Op::MovUnpack {
                    half_bits: ty.bits() / 2,
                    lo: c.dst(&v[0], line)?,
                    hi: c.dst(&v[1], line)?,
                    a: c.src(a, ty, line)?,
                },
                (
                    Sy::Reg(RegRef {
                        class: RegClass::Pred, ..
                    }),
                    a,
                ) => {
                    let d = c.dst(&ops[0], line)?;
                    match a {
                        Sy::Reg(RegRef {
                            class: RegClass::Pred, ..
                        })
                        | Sy::Not(_) => Op::PredLogic {
                            op: PredOp::And,
                            d,
                            a: c.pred_src(a, line)?,
                            b: PredSrc::True,
                        },
                        _ => Op::Mov {
                            d,
                            a: c.src(a, ty, line)?,
                        },
                    }
                }
                (d, a) => Op::Mov {
                    d: c.dst(d, line)?,
                    a: c.src(a, ty, line)?,
                },
            }
        }
        "ld" | "st" => {
            let ty = m.ty()?;
            let space = match m.one_of(&["global", "shared", "param", "local", "const"]) {
                Some(s) => space_of(s),
                None => Space::Generic,
            };
            if matches!(space, Space::Local | Space::Const) {
                return err(line, format!("{space:?} memory is not supported by the simulator"));
            }
            if space == Space::Param && name == "st" {
                return err(line, "st.param (device-function calls) is not supported");
            }
            let n: u8 = match m.one_of(&["v2", "v4"]) {
                Some("v2") => 2,
                Some(_) => 4,
                None => 1,
            };
            // Cache and ordering hints do not change what one thread reads or writes.
            let nc = m.one_of(&["nc"]).is_some();
            m.one_of(&["ca", "cg", "cs", "lu", "cv", "wb", "wt"]);
            m.one_of(&["weak", "volatile", "relaxed"]);
            m.one_of(&["cta", "gpu", "sys"]);
            m.done()?;
            want(ops, 2, opcode, line)?;
            let (val, addr) = if name == "ld" {
                (&ops[0], &ops[1])
            } else {
                (&ops[1], &ops[0])
            };
            let (base, off) = c.addr(addr, space, line)?;
            let items: Vec<&Sy> = match val {
                Sy::Vec(v) => v.iter().collect(),
                other => vec![other],
            };
            if items.len() != n as usize {
                return err(line, format!("`{opcode}` moves {n} values, found {}", items.len()));
            }
            if name == "ld" {
                let mut d = [Dst::Sink; 4];
                for (k, it) in items.iter().enumerate() {
                    d[k] = c.dst(it, line)?;
                }
                Op::Ld {
                    space,
                    ty,
                    n,
                    d,
                    base,
                    off,
                    nc,
                }
            } else {
                let mut v = [Src::Imm(0); 4];
                for (k, it) in items.iter().enumerate() {
                    v[k] = c.src(it, ty, line)?;
                }
                Op::St {
                    space,
                    ty,
                    n,
                    v,
                    base,
                    off,
                }
            }
        }
        "cvta" => {
            want(ops, 2, opcode, line)?;
            let to = m.has("to");
            let space = match m.one_of(&["global", "shared", "param", "local", "const"]) {
                Some(s) => space_of(s),
                None => return err(line, "cvta needs a state space"),
            };
            if matches!(space, Space::Local | Space::Const) {
                return err(line, format!("cvta for {space:?} memory is not supported"));
            }
            let ty = m.ty()?;
            m.done()?;
            if ty.bits() != 64 {
                return err(
                    line,
                    format!("`{opcode}`: 32-bit generic addresses do not exist with .address_size 64"),
                );
            }
            Op::Cvta {
                to_generic: !to,
                space,
                d: c.dst(&ops[0], line)?,
                a: c.src(&ops[1], ty, line)?,
            }
        }
        "bra" => {
            m.has("uni");
            m.done()?;
            want(ops, 1, opcode, line)?;
            Op::Bra {
                target: c.label(&ops[0], line)?,
            }
        }
        "ret" | "exit" => {
            m.has("uni");
            m.done()?;
            want(ops, 0, opcode, line)?;
            Op::Exit
        }
        "bar" | "barrier" => {
            let aligned = name == "bar" || m.has("aligned");
            if !m.has("sync") {
                return err(
                    line,
                    format!("`{opcode}` is not supported (only bar.sync / barrier.sync)"),
                );
            }
            if !aligned {
                return err(line, "barrier.sync without .aligned is not supported");
            }
            m.done()?;
            if ops.len() != 1 {
                return err(line, "bar.sync with a thread count is not supported");
            }
            let id = c.src(&ops[0], Ty::U32, line)?;
            if id != Src::Imm(0) {
                // Named barriers let different warps synchronise on different barriers: not
                // simulated, so refused rather than merged into barrier 0.
                return err(line, "bar.sync with a barrier number other than 0 is not supported");
            }
            Op::Bar { id }
        }
        "shfl" => {
            if !m.has("sync") {
                return err(line, "shfl without .sync (pre-Volta) is not supported");
            }
            let mode = match m.one_of(&["up", "down", "bfly", "idx"]) {
                Some("up") => ShflMode::Up,
                Some("down") => ShflMode::Down,
                Some("bfly") => ShflMode::Bfly,
                Some(_) => ShflMode::Idx,
                None => return err(line, "shfl needs .up/.down/.bfly/.idx"),
            };
            let ty = m.ty()?;
            if ty.bits() != 32 {
                return err(line, "shfl moves 32-bit values");
            }
            m.done()?;
            want(ops, 5, opcode, line)?;
            let (d, p) = match &ops[0] {
                Sy::Pair(d, p) => (c.dst(d, line)?, c.dst(p, line)?),
                other => (c.dst(other, line)?, Dst::Sink),
            };
            Op::Shfl {
                mode,
                d,
                p,
                a: c.src(&ops[1], Ty::B32, line)?,
                b: c.src(&ops[2], Ty::B32, line)?,
                c: c.src(&ops[3], Ty::B32, line)?,
                mask: c.src(&ops[4], Ty::B32, line)?,
            }
        }
        "vote" => {
            if !m.has("sync") {
                return err(line, "vote without .sync is not supported");
            }
            let mode = match m.one_of(&["all", "any", "uni", "ballot"]) {
                Some("all") => VoteMode::All,
                Some("any") => VoteMode::Any,
                Some("uni") => VoteMode::Uni,
                Some(_) => VoteMode::Ballot,
                None => return err(line, "vote needs .all/.any/.uni/.ballot"),
            };
            m.ty()?;
            m.done()?;
            want(ops, 3, opcode, line)?;
            Op::Vote {
                mode,
                d: c.dst(&ops[0], line)?,
                a: c.pred_src(&ops[1], line)?,
                mask: c.src(&ops[2], Ty::B32, line)?,
            }
        }
        "activemask" => {
            m.ty()?;
            m.done()?;
            want(ops, 1, opcode, line)?;
            Op::ActiveMask {
                d: c.dst(&ops[0], line)?,
            }
        }
        _ => return err(line, format!("unknown or unsupported instruction `{opcode}`")),
    };
    Ok(op)
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: &str = r#"
.version 9.0
.target sm_75
.address_size 64

.visible .entry k(
	.param .u64 k_param_0,
	.param .align 8 .b8 k_param_1[24],
	.param .f32 k_param_2
)
.maxntid 256, 1, 1
{
	.reg .pred 	%p<3>;
	.reg .f32 	%f<4>;
	.reg .b32 	%r<5>;
	.reg .b64 	%rd<6>;
	.shared .align 4 .b8 sm[128];

	ld.param.u64 	%rd1, [k_param_0];
	mov.b64 	%rd2, k_param_1;
	ld.param.u32 	%r1, [%rd2+8];
	mov.u32 	%r2, %tid.x;
	setp.ge.s32 	%p1, %r2, %r1;
	@%p1 bra 	$L__BB0_2;
	mov.f32 	%f1, 0f3F800000;
	st.shared.f32 	[sm+4], %f1;
$L__BB0_2:
	ret;
}
"#;

    #[test]
    fn parses_a_kernel() {
        let m = parse_module(K).unwrap();
        assert_eq!(m.version, (9, 0));
        assert_eq!(m.target, "sm_75");
        let k = m.kernel("k").unwrap();
        assert_eq!(k.params.len(), 3);
        assert_eq!((k.params[1].offset, k.params[1].size), (8, 24));
        assert_eq!((k.params[2].offset, k.param_bytes), (32, 36));
        assert_eq!(k.max_threads, Some(256));
        assert_eq!(k.static_shared_bytes, 128);
        assert_eq!(k.code.len(), 10); // 9 + the implicit exit
        assert!(matches!(k.code[1].op, Op::Mov { a: Src::Imm(8), .. }));
        assert!(matches!(k.code[5].op, Op::Bra { target: 8 }));
        assert!(matches!(
            k.code[6].op,
            Op::Mov {
                a: Src::Imm(0x3F80_0000),
                ..
            }
        ));
        assert!(matches!(
            k.code[7].op,
            Op::St {
                space: Space::Shared,
                base: Src::Imm(0),
                off: 4,
                ..
            }
        ));
        assert_eq!(k.code[5].line, 24);
    }

    #[test]
    fn unknown_instructions_and_modifiers_fail_with_their_line() {
        let bad = K.replace("mov.f32 \t%f1, 0f3F800000;", "atom.global.add.f32 \t%f1, [%rd1], %f2;");
        let e = parse_module(&bad).unwrap_err();
        assert_eq!(e.line, 25);
        assert!(e.msg.contains("atom.global.add.f32"), "{e}");
        let bad = K.replace("ld.param.u32", "ld.param.lu.weird.u32");
        let e = parse_module(&bad).unwrap_err();
        assert!(e.msg.contains(".weird"), "{e}");
        let bad = K.replace(".maxntid 256, 1, 1", ".maxntid 256, 1, 1\n.explode 3");
        assert!(parse_module(&bad).unwrap_err().msg.contains(".explode"));
        let bad = K.replace("ret;", "call foo;");
        assert!(parse_module(&bad).unwrap_err().msg.contains("call"));
    }
}
