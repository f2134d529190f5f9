//! The decoded form of a kernel: what the parser produces and the interpreter runs.
//!
//! Every PTX instruction is decoded once, at module load, into an [`Op`] whose operands are
//! register indices, immediates already in the instruction's type, or resolved symbol offsets,
//! so the interpreter never looks at text again. Registers are split by width into a 32-bit file
//! (`.b8`…`.b32`, `.u32`, `.s32`, `.f32`: narrower values zero-extended), a 64-bit file and a
//! predicate file (one bit per lane), as the hardware's register file is 32 bits wide.

/// A PTX fundamental type (PTX ISA §5.2.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Ty {
    B8,
    B16,
    B32,
    B64,
    U8,
    U16,
    U32,
    U64,
    S8,
    S16,
    S32,
    S64,
    F16,
    F32,
    F64,
    Pred,
}

impl Ty {
    pub fn parse(s: &str) -> Option<Ty> {
        Some(match s {
            "b8" => Ty::B8,
            "b16" => Ty::B16,
            "b32" => Ty::B32,
            "b64" => Ty::B64,
            "u8" => Ty::U8,
            "u16" => Ty::U16,
            "u32" => Ty::U32,
            "u64" => Ty::U64,
            "s8" => Ty::S8,
            "s16" => Ty::S16,
            "s32" => Ty::S32,
            "s64" => Ty::S64,
            "f16" => Ty::F16,
            "f32" => Ty::F32,
            "f64" => Ty::F64,
            "pred" => Ty::Pred,
            _ => return None,
        })
    }
    /// Width in bits (a predicate counts as 1).
    pub fn bits(self) -> u32 {
        match self {
            Ty::B8 | Ty::U8 | Ty::S8 => 8,
            Ty::B16 | Ty::U16 | Ty::S16 | Ty::F16 => 16,
            Ty::B32 | Ty::U32 | Ty::S32 | Ty::F32 => 32,
            Ty::B64 | Ty::U64 | Ty::S64 | Ty::F64 => 64,
            Ty::Pred => 1,
        }
    }
    pub fn bytes(self) -> u32 {
        self.bits().div_ceil(8)
    }
    pub fn is_signed(self) -> bool {
        matches!(self, Ty::S8 | Ty::S16 | Ty::S32 | Ty::S64)
    }
    pub fn is_float(self) -> bool {
        matches!(self, Ty::F16 | Ty::F32 | Ty::F64)
    }
    /// The register file a value of this type lives in.
    pub fn class(self) -> RegClass {
        match self {
            Ty::Pred => RegClass::Pred,
            t if t.bits() == 64 => RegClass::R64,
            _ => RegClass::R32,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RegClass {
    R32,
    R64,
    Pred,
}

/// A special register (PTX ISA §10). Read-only, per lane.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sreg {
    Tid(u8),
    Ntid(u8),
    Ctaid(u8),
    Nctaid(u8),
    LaneId,
    WarpId,
    NWarpId,
    SmId,
    NSmId,
    GridId,
    LaneMaskEq,
    LaneMaskLt,
    LaneMaskLe,
    LaneMaskGt,
    LaneMaskGe,
    Clock,
    Clock64,
    GlobalTimer,
}

/// A source operand.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Src {
    R32(u32),
    R64(u32),
    /// A predicate register read as an integer (0 or 1): `selp`'s and `setp`'s combine operands
    /// use [`PredSrc`] instead.
    Pred(u32),
    /// An immediate, already converted to the instruction's type and stored as raw bits.
    Imm(u64),
    Sreg(Sreg),
}

/// A destination operand. `Sink` is PTX's `_`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dst {
    R32(u32),
    R64(u32),
    Pred(u32),
    Sink,
}

/// A predicate operand, possibly negated (`!%p`); `True` for PTX's constant-true cases.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PredSrc {
    Reg { idx: u32, neg: bool },
    True,
}

/// IEEE rounding modes of the floating-point instructions (`.rn .rz .rm .rp`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rnd {
    /// To nearest, ties to even.
    Rn,
    /// Toward zero.
    Rz,
    /// Toward −∞.
    Rm,
    /// Toward +∞.
    Rp,
}

/// Rounding to an integral value (`cvt`'s `.rni .rzi .rmi .rpi`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IRnd {
    Rni,
    Rzi,
    Rmi,
    Rpi,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Space {
    Global,
    Shared,
    Param,
    Local,
    Const,
    /// A generic address: global or shared, decided by the window it falls in.
    Generic,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Lo,
    Ls,
    Hi,
    Hs,
    Equ,
    Neu,
    Ltu,
    Leu,
    Gtu,
    Geu,
    Num,
    Nan,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BoolOp {
    And,
    Or,
    Xor,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShflMode {
    Up,
    Down,
    Bfly,
    Idx,
}

/// Integer operations with two sources.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IntOp {
    Add,
    Sub,
    MulLo,
    MulHi,
    Div,
    Rem,
    Min,
    Max,
    And,
    Or,
    Xor,
    Shl,
    Shr,
}

/// Integer operations with one source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IntUnOp {
    Neg,
    Abs,
    Not,
    Cnot,
    Popc,
    Clz,
    Brev,
}

/// Floating-point operations with two sources.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FBinOp {
    Add,
    Sub,
    Mul,
    /// `div.rn` (IEEE) and, with `approx: true`, `div.approx` / `div.full`.
    Div,
    Min,
    Max,
    Copysign,
}

/// Floating-point operations with one source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FUnOp {
    Neg,
    Abs,
    Sqrt,
    Rcp,
    Rsqrt,
    Ex2,
    Lg2,
    Sin,
    Cos,
    Tanh,
}

/// Floating-point precision of an instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prec {
    F32,
    F64,
}

/// Modifiers of a floating-point instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FMods {
    pub prec: Prec,
    /// The rounding mode (`.rn` when none is written, as PTX specifies for `add`/`mul`/`fma`).
    pub rnd: Rnd,
    /// `.approx` (or `.full` for `div`): the hardware's approximate instruction.
    pub approx: bool,
    /// `.ftz`: subnormal inputs and results are flushed to sign-preserving zero.
    pub ftz: bool,
    /// `.sat`: the result is clamped to [0, 1], NaN to 0.
    pub sat: bool,
    /// `.NaN` on `min`/`max`: a NaN input gives NaN.
    pub nan: bool,
}

/// One decoded instruction.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    Int {
        op: IntOp,
        ty: Ty,
        d: Dst,
        a: Src,
        b: Src,
    },
    IntUn {
        op: IntUnOp,
        ty: Ty,
        d: Dst,
        a: Src,
    },
    /// `mul.wide`: the full product of two `ty` values (16 or 32 bits) in twice the width.
    MulWide {
        ty: Ty,
        d: Dst,
        a: Src,
        b: Src,
    },
    /// `mad.lo` / `mad.hi` (`hi: true`) / `mad.wide` (`wide: true`): `a*b + c`.
    Mad {
        ty: Ty,
        hi: bool,
        wide: bool,
        d: Dst,
        a: Src,
        b: Src,
        c: Src,
    },
    /// `bfe`: extract `c` bits from `a` starting at bit `b` (sign-extended for `.s`).
    Bfe {
        ty: Ty,
        d: Dst,
        a: Src,
        b: Src,
        c: Src,
    },
    /// `bfi`: insert the low `len` bits of `a` into `b` at `pos`.
    Bfi {
        ty: Ty,
        d: Dst,
        a: Src,
        b: Src,
        pos: Src,
        len: Src,
    },
    /// Logic on predicates: `and/or/xor.pred`, and `not.pred` (`b` unused).
    PredLogic {
        op: PredOp,
        d: Dst,
        a: PredSrc,
        b: PredSrc,
    },
    FBin {
        op: FBinOp,
        m: FMods,
        d: Dst,
        a: Src,
        b: Src,
    },
    FUn {
        op: FUnOp,
        m: FMods,
        d: Dst,
        a: Src,
    },
    Fma {
        m: FMods,
        d: Dst,
        a: Src,
        b: Src,
        c: Src,
    },
    Setp {
        cmp: Cmp,
        ty: Ty,
        ftz: bool,
        comb: Option<(BoolOp, PredSrc)>,
        p: Dst,
        q: Dst,
        a: Src,
        b: Src,
    },
    Selp {
        ty: Ty,
        d: Dst,
        a: Src,
        b: Src,
        c: PredSrc,
    },
    Cvt {
        dty: Ty,
        sty: Ty,
        rnd: Option<Rnd>,
        irnd: Option<IRnd>,
        sat: bool,
        ftz: bool,
        d: Dst,
        a: Src,
    },
    Mov {
        d: Dst,
        a: Src,
    },
    /// `mov.b64 d, {lo, hi}` (or `.b32` from two 16-bit halves: `half_bits = 16`).
    MovPack {
        half_bits: u32,
        d: Dst,
        lo: Src,
        hi: Src,
    },
    /// `mov.b64 {lo, hi}, a`.
    MovUnpack {
        half_bits: u32,
        lo: Dst,
        hi: Dst,
        a: Src,
    },
    Ld {
        space: Space,
        ty: Ty,
        n: u8,
        d: [Dst; 4],
        base: Src,
        off: i64,
        /// `.nc`: through the non-coherent read-only path, which promises the data is not
        /// written during the launch (racecheck holds the kernel to it).
        nc: bool,
    },
    St {
        space: Space,
        ty: Ty,
        n: u8,
        v: [Src; 4],
        base: Src,
        off: i64,
    },
    /// `cvta.space` (`to_generic: true`) or `cvta.to.space`.
    Cvta {
        to_generic: bool,
        space: Space,
        d: Dst,
        a: Src,
    },
    Bra {
        target: u32,
    },
    /// `ret` or `exit`: the lanes end.
    Exit,
    /// `bar.sync id` / `barrier.sync.aligned id` (the whole block; aligned: every thread of a
    /// warp reaches the same instruction).
    Bar {
        id: Src,
    },
    Shfl {
        mode: ShflMode,
        d: Dst,
        p: Dst,
        a: Src,
        b: Src,
        c: Src,
        mask: Src,
    },
    /// `vote.sync.{all,any,uni,ballot}`.
    Vote {
        mode: VoteMode,
        d: Dst,
        a: PredSrc,
        mask: Src,
    },
    /// `activemask.b32`.
    ActiveMask {
        d: Dst,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PredOp {
    And,
    Or,
    Xor,
    Not,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VoteMode {
    All,
    Any,
    Uni,
    Ballot,
}

/// The class an instruction counts under in a launch's counters (what Nsight Compute's
/// instruction statistics group by).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IClass {
    /// Integer and bit arithmetic, integer compares and selects.
    Int,
    F32,
    F64,
    /// Loads and stores, any state space.
    Mem,
    /// Branches and exits.
    Ctrl,
    /// Barriers and warp-synchronous instructions (`bar`, `shfl`, `vote`, `activemask`).
    Sync,
    /// Moves and conversions between types and address spaces.
    Move,
}

impl IClass {
    pub const ALL: [IClass; 7] = [
        IClass::Int,
        IClass::F32,
        IClass::F64,
        IClass::Mem,
        IClass::Ctrl,
        IClass::Sync,
        IClass::Move,
    ];
    pub fn name(self) -> &'static str {
        match self {
            IClass::Int => "int",
            IClass::F32 => "f32",
            IClass::F64 => "f64",
            IClass::Mem => "memory",
            IClass::Ctrl => "control",
            IClass::Sync => "sync",
            IClass::Move => "move",
        }
    }
    /// The class of a decoded instruction.
    pub fn of(op: &Op) -> IClass {
        let by_ty = |t: Ty| match t {
            Ty::F32 => IClass::F32,
            Ty::F64 => IClass::F64,
            _ => IClass::Int,
        };
        let by_prec = |p: Prec| if p == Prec::F32 { IClass::F32 } else { IClass::F64 };
        match op {
            Op::Int { .. }
            | Op::IntUn { .. }
            | Op::MulWide { .. }
            | Op::Mad { .. }
            | Op::Bfe { .. }
            | Op::Bfi { .. } => IClass::Int,
            Op::PredLogic { .. } => IClass::Int,
            Op::FBin { m, .. } | Op::FUn { m, .. } | Op::Fma { m, .. } => by_prec(m.prec),
            Op::Setp { ty, .. } | Op::Selp { ty, .. } => by_ty(*ty),
            Op::Cvt { .. } | Op::Mov { .. } | Op::MovPack { .. } | Op::MovUnpack { .. } | Op::Cvta { .. } => {
                IClass::Move
            }
            Op::Ld { .. } | Op::St { .. } => IClass::Mem,
            Op::Bra { .. } | Op::Exit => IClass::Ctrl,
            Op::Bar { .. } | Op::Shfl { .. } | Op::Vote { .. } | Op::ActiveMask { .. } => IClass::Sync,
        }
    }
}

/// An instruction with its guard predicate and where it came from.
#[derive(Clone, Debug)]
pub struct Instr {
    pub op: Op,
    /// Its class in the launch counters.
    pub class: IClass,
    /// `@%p` / `@!%p`; `PredSrc::True` when unguarded.
    pub guard: PredSrc,
    /// 1-based line in the PTX text.
    pub line: u32,
}

/// A kernel parameter's place in the parameter buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Param {
    pub name: String,
    pub offset: u32,
    pub size: u32,
    pub align: u32,
}

/// A `.shared` variable laid out in the block's shared memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedVar {
    pub name: String,
    pub offset: u32,
    pub size: u32,
    pub align: u32,
}

/// A kernel (`.entry`), decoded.
#[derive(Clone, Debug)]
pub struct Kernel {
    pub name: String,
    pub params: Vec<Param>,
    /// Bytes of the parameter buffer.
    pub param_bytes: u32,
    pub code: Vec<Instr>,
    pub n_r32: u32,
    pub n_r64: u32,
    pub n_pred: u32,
    /// Static shared memory: the kernel's own `.shared` variables and the module-scope ones it
    /// uses, laid out one after another.
    pub shared: Vec<SharedVar>,
    pub static_shared_bytes: u32,
    /// Offset where dynamic shared memory (`.extern .shared`) starts, aligned for it.
    pub dynamic_shared_offset: u32,
    pub uses_dynamic_shared: bool,
    /// `.maxntid` / `.reqntid`, when given: the most threads a block may have.
    pub max_threads: Option<u32>,
    pub reqntid: Option<[u32; 3]>,
}

/// A loaded module: its kernels and the text it came from.
#[derive(Clone, Debug)]
pub struct Module {
    pub version: (u32, u32),
    pub target: String,
    /// The line of the `.target` directive.
    pub target_line: u32,
    pub kernels: Vec<Kernel>,
    /// The PTX text, one entry per line (for naming the line of a finding).
    pub lines: Vec<String>,
}

impl Module {
    pub fn kernel(&self, name: &str) -> Option<&Kernel> {
        self.kernels.iter().find(|k| k.name == name)
    }
    /// The text of PTX line `line` (1-based), trimmed.
    pub fn line_text(&self, line: u32) -> &str {
        self.lines.get(line as usize - 1).map_or("", |s| s.trim())
    }
}
