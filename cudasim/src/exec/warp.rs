//! One block at a time: its warps, their SIMT scheduling, and every instruction's effect.
//!
//! # The execution model
//! * A block's threads are grouped into warps of 32 lanes (thread `t` is lane `t % 32` of warp
//!   `t / 32`, with `t` the linear `%tid`). A warp executes one instruction at a time for the
//!   lanes that are at it; a register holds one value per lane.
//! * **Divergence and reconvergence** follow the "minimum PC" rule: when a branch splits a warp,
//!   each side becomes a group with its own program counter, and the warp always runs the group
//!   with the lowest PC; groups that reach the same PC merge. With the code layout NVVM emits
//!   (forward branches to join points, backward branches for loops) this reconverges where the
//!   immediate post-dominator would, and it never lets one side starve the other.
//! * **Warp-synchronous instructions** (`shfl.sync`, `vote.sync`) wait until every lane of
//!   their member mask has arrived at the same instruction; a lane that exited, or that waits
//!   somewhere the others can never reach, is a synccheck finding.
//! * **`bar.sync`** parks the warp until every live (not exited) thread of the block waits at
//!   a barrier; they must all wait at the same `bar.sync` instruction (it is `.aligned`), or
//!   synccheck reports the divergent barrier.
//! * A block's warps run in turn on one host thread, each until it exits or waits at a
//!   barrier; the blocks of a launch run in parallel (see `exec::launch`). Nothing here depends
//!   on the order warps run in, except the values a racy kernel reads — and racecheck reports
//!   those races.

use super::alu;
use super::float;
use super::Stats;
use crate::check::{self, CheckKind, Checks, Finding};
use crate::memory::{SharedMem, Snapshot, PARAM_WINDOW, SHARED_WINDOW, SHARED_WINDOW_SIZE};
use crate::ptx::ir::*;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed, Ordering::SeqCst};

/// Iterate over the set bits of a lane mask.
macro_rules! lanes {
    ($mask:expr, $l:ident, $body:block) => {{
        let m: u32 = $mask;
        if m == u32::MAX {
            for $l in 0..32usize $body
        } else {
            let mut mm = m;
            while mm != 0 {
                let $l = mm.trailing_zeros() as usize;
                mm &= mm - 1;
                $body
            }
        }
    }};
}

/// Everything a launch's blocks share.
pub(crate) struct LaunchCtx<'a> {
    pub kernel: &'a Kernel,
    pub module: &'a Module,
    pub snap: &'a Snapshot,
    pub params: &'a [u8],
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub shared_bytes: u32,
    pub checks: Checks,
    /// Memory carries shadow state (racecheck or initcheck on).
    pub shadow: bool,
    pub epoch: u32,
    pub sm_count: u32,
    pub max_warp_steps: u64,
    pub abort: &'a AtomicBool,
    /// Which memory accesses a freed allocation would have served (for memcheck's wording).
    pub was_freed: &'a (dyn Fn(u64) -> bool + Sync),
}

/// Why a block stopped early.
pub(crate) enum Stop {
    Found(Box<Finding>),
    /// Another block found a defect: this one stops without a report of its own.
    Aborted,
}

type Res<T> = Result<T, Stop>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wait {
    Ready,
    Bar,
    Sync,
}

#[derive(Clone, Copy, Debug)]
struct Group {
    pc: u32,
    mask: u32,
    wait: Wait,
    /// For a group waiting at a warp-synchronous instruction: the lanes its member masks name.
    need: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WState {
    Running,
    AtBarrier,
    Done,
}

struct Warp {
    id: u32,
    r32: Vec<u32>,
    r64: Vec<u64>,
    pred: Vec<u32>,
    /// Lanes that exist and have not exited.
    live: u32,
    /// The running group.
    pc: u32,
    mask: u32,
    /// Lanes elsewhere.
    groups: Vec<Group>,
    state: WState,
    /// `%tid` of each lane, and its linear index in the block.
    tid: [[u32; 3]; 32],
    tlin: [u32; 32],
    steps: u64,
    /// Index in the snapshot of the allocation the last global access hit.
    alloc_hint: usize,
}

impl Warp {
    fn new() -> Warp {
        Warp {
            id: 0,
            r32: Vec::new(),
            r64: Vec::new(),
            pred: Vec::new(),
            live: 0,
            pc: 0,
            mask: 0,
            groups: Vec::new(),
            state: WState::Done,
            tid: [[0; 3]; 32],
            tlin: [0; 32],
            steps: 0,
            alloc_hint: 0,
        }
    }

    fn reset(&mut self, k: &Kernel, id: u32, block: [u32; 3], nthreads: u32) {
        self.id = id;
        self.r32.clear();
        self.r32.resize(k.n_r32 as usize * 32, 0);
        self.r64.clear();
        self.r64.resize(k.n_r64 as usize * 32, 0);
        self.pred.clear();
        self.pred.resize(k.n_pred as usize, 0);
        let first = id * 32;
        let n = nthreads.saturating_sub(first).min(32);
        self.live = if n == 32 { u32::MAX } else { (1u32 << n) - 1 };
        self.pc = 0;
        self.mask = self.live;
        self.groups.clear();
        self.state = WState::Running;
        for l in 0..32u32 {
            let t = first + l;
            self.tlin[l as usize] = t;
            self.tid[l as usize] = [t % block[0], (t / block[0]) % block[1], t / (block[0] * block[1])];
        }
        self.steps = 0;
    }

    /// Add lanes at `pc` to the groups (merging with a group already there).
    fn push_group(&mut self, pc: u32, mask: u32, wait: Wait) {
        if mask == 0 {
            return;
        }
        if let Some(g) = self.groups.iter_mut().find(|g| g.pc == pc) {
            g.mask |= mask;
            if wait == Wait::Ready {
                g.wait = Wait::Ready; // the arrivals re-run the instruction with every lane
            }
            return;
        }
        self.groups.push(Group {
            pc,
            mask,
            wait,
            need: 0,
        });
    }

    /// The running group waits here (for a warp-synchronous instruction, for the lanes `need`).
    fn park(&mut self, wait: Wait, need: u32) {
        let (pc, mask) = (self.pc, self.mask);
        self.mask = 0;
        self.push_group(pc, mask, wait);
        if let Some(g) = self.groups.iter_mut().find(|g| g.pc == pc) {
            g.need |= need;
        }
    }

    /// After the running group moved: merge what waits at its new PC, and hand over to a ready
    /// group with a lower PC (the minimum-PC rule).
    fn reschedule(&mut self) {
        let mut i = 0;
        while i < self.groups.len() {
            if self.groups[i].pc == self.pc {
                self.mask |= self.groups[i].mask;
                self.groups.swap_remove(i);
            } else {
                i += 1;
            }
        }
        let mut best: Option<usize> = None;
        for (j, g) in self.groups.iter().enumerate() {
            if g.wait == Wait::Ready && g.pc < self.pc && best.is_none_or(|b| g.pc < self.groups[b].pc) {
                best = Some(j);
            }
        }
        if let Some(j) = best {
            let g = self.groups[j];
            self.groups[j] = Group {
                pc: self.pc,
                mask: self.mask,
                wait: Wait::Ready,
                need: 0,
            };
            self.pc = g.pc;
            self.mask = g.mask;
        }
    }

    /// A source operand for all 32 lanes.
    #[inline(always)]
    fn fetch(&self, s: &Src, env: &Env) -> Lanes {
        let mut out: Lanes = [0; 32];
        match *s {
            Src::R32(i) => {
                let r = &self.r32[i as usize * 32..][..32];
                for l in 0..32 {
                    out[l] = r[l] as u64;
                }
            }
            Src::R64(i) => out.copy_from_slice(&self.r64[i as usize * 32..][..32]),
            Src::Imm(v) => out = [v; 32],
            Src::Pred(i) => {
                let p = self.pred[i as usize];
                for (l, o) in out.iter_mut().enumerate() {
                    *o = ((p >> l) & 1) as u64;
                }
            }
            Src::Sreg(r) => {
                for (l, o) in out.iter_mut().enumerate() {
                    *o = self.sreg(r, l, env);
                }
            }
        }
        out
    }

    /// Write the lanes in `em` of a destination.
    #[inline(always)]
    fn put(&mut self, d: &Dst, em: u32, v: &Lanes) {
        match *d {
            Dst::R32(i) => {
                let r = &mut self.r32[i as usize * 32..][..32];
                if em == u32::MAX {
                    for l in 0..32 {
                        r[l] = v[l] as u32;
                    }
                } else {
                    lanes!(em, l, {
                        r[l] = v[l] as u32;
                    });
                }
            }
            Dst::R64(i) => {
                let r = &mut self.r64[i as usize * 32..][..32];
                if em == u32::MAX {
                    r.copy_from_slice(v);
                } else {
                    lanes!(em, l, {
                        r[l] = v[l];
                    });
                }
            }
            Dst::Pred(_) => {
                let mut bits = 0u32;
                for (l, x) in v.iter().enumerate() {
                    bits |= ((x & 1) as u32) << l;
                }
                self.put_pred(d, em, bits);
            }
            Dst::Sink => {}
        }
    }

    /// Write the lanes in `em` of a predicate destination from a lane mask.
    #[inline(always)]
    fn put_pred(&mut self, d: &Dst, em: u32, bits: u32) {
        match *d {
            Dst::Pred(i) => {
                let p = &mut self.pred[i as usize];
                *p = (*p & !em) | (bits & em);
            }
            Dst::Sink => {}
            // A predicate result into an integer register: 0 or 1 per lane.
            Dst::R32(_) | Dst::R64(_) => {
                let mut v: Lanes = [0; 32];
                for (l, x) in v.iter_mut().enumerate() {
                    *x = ((bits >> l) & 1) as u64;
                }
                self.put(d, em, &v);
            }
        }
    }

    #[inline(always)]
    fn pred_mask(&self, p: &PredSrc) -> u32 {
        match *p {
            PredSrc::True => u32::MAX,
            PredSrc::Reg { idx, neg } => {
                let v = self.pred[idx as usize];
                if neg {
                    !v
                } else {
                    v
                }
            }
        }
    }

    fn sreg(&self, r: Sreg, l: usize, env: &Env) -> u64 {
        let lane = l as u32;
        (match r {
            Sreg::Tid(d) => self.tid[l][d as usize],
            Sreg::Ntid(d) => env.ntid[d as usize],
            Sreg::Ctaid(d) => env.ctaid[d as usize],
            Sreg::Nctaid(d) => env.nctaid[d as usize],
            Sreg::LaneId => lane,
            Sreg::WarpId => self.id,
            Sreg::NWarpId => 64,
            Sreg::SmId => env.block_linear % env.sm_count,
            Sreg::NSmId => env.sm_count,
            Sreg::GridId => env.epoch,
            Sreg::LaneMaskEq => 1 << lane,
            Sreg::LaneMaskLt => (1u32 << lane) - 1,
            Sreg::LaneMaskLe => ((1u64 << (lane + 1)) - 1) as u32,
            Sreg::LaneMaskGt => !(((1u64 << (lane + 1)) - 1) as u32),
            Sreg::LaneMaskGe => !((1u32 << lane) - 1),
            // Clocks count this warp's instructions: monotonic, as a program may assume.
            Sreg::Clock => self.steps as u32,
            Sreg::Clock64 | Sreg::GlobalTimer => return self.steps,
        }) as u64
    }
}

/// The block's constants, for special registers and access records.
struct Env {
    ctaid: [u32; 3],
    ntid: [u32; 3],
    nctaid: [u32; 3],
    block_linear: u32,
    sm_count: u32,
    epoch: u32,
    /// The barrier interval: how many barriers the block has passed.
    interval: u32,
    /// This block's global access record for thread 0 in the current interval (`check`).
    me_base: u64,
}

impl Env {
    fn set_interval(&mut self, interval: u32) {
        self.interval = interval;
        self.me_base = check::AccessRec {
            epoch: self.epoch,
            block: self.block_linear,
            interval,
            thread: 0,
        }
        .pack();
    }
}

/// Warp instructions a warp runs before the next warp of its block gets a turn.
const TIME_SLICE: u64 = 1 << 14;

/// One value per lane.
type Lanes = [u64; 32];

/// Runs blocks; one per host thread, reused from block to block.
pub(crate) struct BlockRunner {
    warps: Vec<Warp>,
    shared: SharedMem,
}

impl BlockRunner {
    pub fn new() -> BlockRunner {
        BlockRunner {
            warps: Vec::new(),
            shared: SharedMem::new(0),
        }
    }

    /// Run block number `block_linear` (x fastest) of the launch to completion.
    pub fn run(&mut self, ctx: &LaunchCtx, block_linear: u32, stats: &mut Stats) -> Res<()> {
        let [gx, gy, _] = ctx.grid;
        let ctaid = [block_linear % gx, (block_linear / gx) % gy, block_linear / (gx * gy)];
        let nthreads = ctx.block.iter().product::<u32>();
        let nwarps = nthreads.div_ceil(32);
        if self.shared.size != ctx.shared_bytes {
            self.shared = SharedMem::new(ctx.shared_bytes);
        } else {
            self.shared.reset();
        }
        while self.warps.len() < nwarps as usize {
            self.warps.push(Warp::new());
        }
        for (i, w) in self.warps.iter_mut().take(nwarps as usize).enumerate() {
            w.reset(ctx.kernel, i as u32, ctx.block, nthreads);
        }
        let mut ex = Exec {
            ctx,
            env: Env {
                ctaid,
                ntid: ctx.block,
                nctaid: ctx.grid,
                block_linear,
                sm_count: ctx.sm_count,
                epoch: ctx.epoch,
                interval: 0,
                me_base: 0,
            },
            shared: &mut self.shared,
            stats,
        };
        ex.env.set_interval(0);
        let warps = &mut self.warps[..nwarps as usize];
        loop {
            let mut running = false;
            for w in warps.iter_mut() {
                if w.state == WState::Running {
                    ex.run_warp(w)?;
                    running |= w.state == WState::Running;
                }
            }
            if running {
                continue; // a warp used up its time slice: another round
            }
            if warps.iter().all(|w| w.state == WState::Done) {
                return Ok(());
            }
            // Every live thread waits at a barrier: they must all wait at the same one.
            let mut pcs: Vec<(u32, u32, u32)> = Vec::new(); // (pc, warp, mask)
            for w in warps.iter().filter(|w| w.state == WState::AtBarrier) {
                for g in &w.groups {
                    pcs.push((g.pc, w.id, g.mask));
                }
            }
            let first_pc = pcs[0].0;
            if ctx.checks.synccheck {
                if let Some(&(pc2, w2, m2)) = pcs.iter().find(|p| p.0 != first_pc) {
                    let (_, w1, m1) = pcs[0];
                    let l1 = m1.trailing_zeros();
                    let detail = format!(
                        "divergent barrier: threads wait at different bar.sync instructions — warp {w1} lanes {} \
                         at PTX line {}, warp {w2} lanes {} at PTX line {} — so not every live thread of the \
                         block reaches either",
                        show_mask(m1),
                        ctx.kernel.code[first_pc as usize].line,
                        show_mask(m2),
                        ctx.kernel.code[pc2 as usize].line
                    );
                    let w = &warps[w1 as usize];
                    return Err(ex.finding_at(CheckKind::Synccheck, first_pc, w, l1 as usize, None, detail));
                }
            }
            ex.env.set_interval(ex.env.interval + 1);
            ex.stats.barriers += 1;
            for w in warps.iter_mut().filter(|w| w.state == WState::AtBarrier) {
                let gs = std::mem::take(&mut w.groups);
                w.mask = 0;
                w.pc = u32::MAX;
                for g in gs {
                    w.push_group(g.pc + 1, g.mask, Wait::Ready);
                }
                let g = w.groups.swap_remove(0);
                w.pc = g.pc;
                w.mask = g.mask;
                w.reschedule();
                w.state = WState::Running;
            }
        }
    }
}

fn show_mask(m: u32) -> String {
    // Lane ranges, e.g. "0-15,20".
    let mut parts = Vec::new();
    let mut l = 0;
    while l < 32 {
        if m >> l & 1 == 1 {
            let start = l;
            while l + 1 < 32 && m >> (l + 1) & 1 == 1 {
                l += 1;
            }
            parts.push(if start == l {
                format!("{start}")
            } else {
                format!("{start}-{l}")
            });
        }
        l += 1;
    }
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(",")
    }
}

struct Exec<'a, 'b> {
    ctx: &'a LaunchCtx<'a>,
    env: Env,
    shared: &'b mut SharedMem,
    stats: &'b mut Stats,
}

/// What a memory access does.
#[derive(Clone, Copy, PartialEq)]
enum Access {
    Read,
    /// A read through the non-coherent read-only path (`ld.global.nc`).
    ReadNc,
    Write(u64),
}

impl Exec<'_, '_> {
    fn finding_at(
        &self,
        check: CheckKind,
        pc: u32,
        w: &Warp,
        lane: usize,
        address: Option<u64>,
        detail: String,
    ) -> Stop {
        let line = self.ctx.kernel.code[pc as usize].line;
        Stop::Found(Box::new(Finding {
            check,
            kernel: self.ctx.kernel.name.clone(),
            line,
            instr: self.ctx.module.line_text(line).to_string(),
            block: self.env.ctaid,
            thread: w.tid[lane],
            address,
            detail,
        }))
    }

    fn finding(&self, check: CheckKind, w: &Warp, lane: usize, address: Option<u64>, detail: String) -> Stop {
        self.finding_at(check, w.pc, w, lane, address, detail)
    }

    /// Choose the next group to run when the running one has none left. `false`: the warp is
    /// done or waits at a barrier.
    fn next_group(&mut self, w: &mut Warp) -> Res<bool> {
        let mut best: Option<usize> = None;
        for (j, g) in w.groups.iter().enumerate() {
            if g.wait == Wait::Ready && best.is_none_or(|b| g.pc < w.groups[b].pc) {
                best = Some(j);
            }
        }
        if let Some(j) = best {
            let g = w.groups.swap_remove(j);
            w.pc = g.pc;
            w.mask = g.mask;
            return Ok(true);
        }
        if w.groups.is_empty() {
            w.state = WState::Done;
            return Ok(false);
        }
        if self.release_synced(w)? {
            return self.next_group(w);
        }
        if let Some(g) = w.groups.iter().find(|g| g.wait == Wait::Sync).copied() {
            // Lanes wait for lanes that will never arrive: they exited, or wait elsewhere.
            let lane = g.mask.trailing_zeros() as usize;
            let gone = g.need & !w.live;
            if gone != 0 {
                let detail = format!(
                    "member mask 0x{:08x} names lanes {} that have exited (or do not exist in this block)",
                    g.need,
                    show_mask(gone)
                );
                return Err(self.finding_at(CheckKind::Synccheck, g.pc, w, lane, None, detail));
            }
            let others: Vec<String> = w
                .groups
                .iter()
                .filter(|o| o.pc != g.pc)
                .map(|o| {
                    format!(
                        "lanes {} wait at PTX line {} ({})",
                        show_mask(o.mask),
                        self.ctx.kernel.code[o.pc as usize].line,
                        if o.wait == Wait::Bar {
                            "bar.sync"
                        } else {
                            "another warp-synchronous instruction"
                        }
                    )
                })
                .collect();
            let detail = format!(
                "deadlock: lanes {} of warp {} wait for lanes {} of their member mask, which never arrive ({})",
                show_mask(g.mask),
                w.id,
                show_mask(g.need & !g.mask),
                others.join("; ")
            );
            return Err(self.finding_at(CheckKind::Synccheck, g.pc, w, lane, None, detail));
        }
        w.state = WState::AtBarrier;
        Ok(false)
    }

    /// Run a warp until it exits, waits at a barrier, or has used its time slice (it stays
    /// `Running`: the block's other warps get their turn, so a warp spinning on a flag another
    /// warp sets does not starve it).
    fn run_warp(&mut self, w: &mut Warp) -> Res<()> {
        let code = &self.ctx.kernel.code;
        let slice_end = w.steps + TIME_SLICE;
        loop {
            if w.mask == 0 && !self.next_group(w)? {
                return Ok(());
            }
            if w.steps >= slice_end {
                return Ok(());
            }
            w.steps += 1;
            if w.steps & 0xfff == 0 {
                if self.ctx.abort.load(Relaxed) {
                    return Err(Stop::Aborted);
                }
                if w.steps > self.ctx.max_warp_steps {
                    let lane = w.mask.trailing_zeros() as usize;
                    let detail = format!(
                        "warp {} executed more than {} instructions: an endless loop? (CUDASIM_MAX_WARP_STEPS raises the limit)",
                        w.id, self.ctx.max_warp_steps
                    );
                    return Err(self.finding(CheckKind::Watchdog, w, lane, None, detail));
                }
            }
            let ins = &code[w.pc as usize];
            let em = w.mask & w.pred_mask(&ins.guard);
            self.stats.warp_instructions += 1;
            self.stats.thread_instructions += em.count_ones() as u64;
            self.stats.class_warp[ins.class as usize] += 1;
            self.stats.class_thread[ins.class as usize] += em.count_ones() as u64;
            match &ins.op {
                Op::Bra { target } => {
                    let not = w.mask & !em;
                    if not == 0 {
                        w.pc = *target;
                    } else if em == 0 {
                        w.pc += 1;
                    } else {
                        let fall = w.pc + 1;
                        if *target < fall {
                            w.push_group(fall, not, Wait::Ready);
                            w.pc = *target;
                            w.mask = em;
                        } else {
                            w.push_group(*target, em, Wait::Ready);
                            w.pc = fall;
                            w.mask = not;
                        }
                    }
                }
                Op::Exit => {
                    w.live &= !em;
                    w.mask &= !em;
                    if w.mask == 0 {
                        continue;
                    }
                    w.pc += 1;
                }
                Op::Bar { .. } => {
                    if em != w.mask {
                        if em != 0 && self.ctx.checks.synccheck {
                            // bar.sync is .aligned: every thread of the warp executes it, or none.
                            let l = em.trailing_zeros() as usize;
                            let detail = format!(
                                "bar.sync under a guard true for lanes {} but false for lanes {} of warp {} \
                                 (bar.sync is .aligned: all the warp's threads must execute it together)",
                                show_mask(em),
                                show_mask(w.mask & !em),
                                w.id
                            );
                            return Err(self.finding(CheckKind::Synccheck, w, l, None, detail));
                        }
                        // Lanes whose guard is false do not take part: they go on.
                        w.push_group(w.pc + 1, w.mask & !em, Wait::Ready);
                        w.mask = em;
                    }
                    if em != 0 {
                        w.park(Wait::Bar, 0);
                        continue;
                    }
                }
                Op::Shfl { .. } | Op::Vote { .. } => {
                    if em == 0 {
                        w.pc += 1;
                    } else if !self.warp_sync(w, ins, em)? {
                        continue; // parked until the rest of the member mask arrives
                    }
                }
                op => {
                    if em != 0 {
                        self.exec(w, op, em)?;
                    }
                    w.pc += 1;
                }
            }
            if !w.groups.is_empty() {
                w.reschedule();
            }
        }
    }

    /// `shfl.sync` / `vote.sync` reached by the running group: run it if every lane its member
    /// masks name is here (returns true, PC advanced), else park the lanes that are (false) until
    /// the others arrive — at this instruction or, as sm_70 and later allow, at another
    /// `shfl.sync`/`vote.sync` (see [`Exec::release_synced`]). Waiting is the instruction's
    /// semantics, so it happens with synccheck off too.
    fn warp_sync(&mut self, w: &mut Warp, _ins: &Instr, em: u32) -> Res<bool> {
        if em != w.mask {
            // Lanes whose guard is false do not take part: they go on.
            w.push_group(w.pc + 1, w.mask & !em, Wait::Ready);
            w.mask = em;
        }
        let need = self.member_masks(w, &[(w.pc, em)])?;
        if need & !em == 0 {
            self.exec_sync(w, &[(w.pc, em)])?;
            w.pc += 1;
            return Ok(true);
        }
        w.park(Wait::Sync, need);
        Ok(false)
    }

    /// The union of the member masks of the lanes in `parts` (`(pc, lanes)` pairs); with
    /// synccheck, a lane whose own mask leaves it out is a finding.
    fn member_masks(&self, w: &Warp, parts: &[(u32, u32)]) -> Res<u32> {
        let mut need = 0u32;
        for &(pc, lanes) in parts {
            let mask_src = match &self.ctx.kernel.code[pc as usize].op {
                Op::Shfl { mask, .. } | Op::Vote { mask, .. } => *mask,
                _ => unreachable!("a warp-synchronous group waits at another instruction"),
            };
            let ms = w.fetch(&mask_src, &self.env);
            let mut bad = None;
            lanes!(lanes, l, {
                let mm = ms[l] as u32;
                if mm >> l & 1 == 0 && bad.is_none() {
                    bad = Some((l, mm));
                }
                need |= mm;
            });
            if let (true, Some((l, mm))) = (self.ctx.checks.synccheck, bad) {
                let detail = format!(
                    "lane {l} executes a warp-synchronous instruction whose member mask 0x{mm:08x} leaves it out"
                );
                return Err(self.finding_at(CheckKind::Synccheck, pc, w, l, None, detail));
            }
        }
        Ok(need)
    }

    /// Execute warp-synchronous instructions for the lanes of `parts` together: each lane
    /// evaluates its own instruction's operands; a shuffle reads the source value the lane it
    /// names offers at its own instruction.
    fn exec_sync(&mut self, w: &mut Warp, parts: &[(u32, u32)]) -> Res<()> {
        let code = &self.ctx.kernel.code;
        let all = parts.iter().fold(0u32, |m, p| m | p.1);
        let first = &code[parts[0].0 as usize].op;
        for &(pc, lanes) in &parts[1..] {
            let same_kind = match (first, &code[pc as usize].op) {
                (Op::Shfl { mode: a, .. }, Op::Shfl { mode: b, .. }) => a == b,
                (Op::Vote { mode: a, .. }, Op::Vote { mode: b, .. }) => a == b,
                _ => false,
            };
            if !same_kind {
                let l = lanes.trailing_zeros() as usize;
                let detail = format!(
                    "lanes {} and {} synchronise at different kinds of warp-synchronous instruction (PTX lines {} and {})",
                    show_mask(parts[0].1),
                    show_mask(lanes),
                    code[parts[0].0 as usize].line,
                    code[pc as usize].line
                );
                return Err(self.finding_at(CheckKind::Synccheck, pc, w, l, None, detail));
            }
        }
        match first {
            Op::Shfl { .. } => {
                // Every lane's offered value, each from its own instruction.
                let mut offered: Lanes = [0; 32];
                for &(pc, lanes) in parts {
                    if let Op::Shfl { a, .. } = code[pc as usize].op {
                        let av = w.fetch(&a, &self.env);
                        lanes!(lanes, l, {
                            offered[l] = av[l];
                        });
                    }
                }
                for &(pc, lanes) in parts {
                    let Op::Shfl { mode, d, p, b, c, .. } = code[pc as usize].op else {
                        unreachable!()
                    };
                    let (bv, cv) = (w.fetch(&b, &self.env), w.fetch(&c, &self.env));
                    let mut vals: Lanes = [0; 32];
                    let mut preds = 0u32;
                    lanes!(lanes, l, {
                        let (j, pval) = shfl_source(mode, l as u32, bv[l] as u32, cv[l] as u32);
                        let src = if pval { j as usize } else { l };
                        if all >> src & 1 == 0 {
                            if self.ctx.checks.synccheck {
                                let detail = format!(
                                    "shfl.sync reads lane {src}, which does not take part (its value is undefined)"
                                );
                                return Err(self.finding_at(CheckKind::Synccheck, pc, w, l, None, detail));
                            }
                            vals[l] = offered[l];
                        } else {
                            vals[l] = offered[src];
                        }
                        preds |= (pval as u32) << l;
                    });
                    w.put(&d, lanes, &vals);
                    w.put_pred(&p, lanes, preds);
                }
            }
            Op::Vote { .. } => {
                let mut votes = 0u32;
                for &(pc, lanes) in parts {
                    if let Op::Vote { a, .. } = code[pc as usize].op {
                        votes |= w.pred_mask(&a) & lanes;
                    }
                }
                for &(pc, lanes) in parts {
                    let Op::Vote { mode, d, .. } = code[pc as usize].op else {
                        unreachable!()
                    };
                    let r = match mode {
                        VoteMode::All => (votes == all) as u64,
                        VoteMode::Any => (votes != 0) as u64,
                        VoteMode::Uni => (votes == 0 || votes == all) as u64,
                        VoteMode::Ballot => votes as u64,
                    };
                    w.put(&d, lanes, &[r; 32]);
                }
            }
            _ => unreachable!("exec_sync on another instruction"),
        }
        Ok(())
    }

    /// When nothing else can run: the largest set of groups waiting at warp-synchronous
    /// instructions whose member masks they satisfy together runs (each group then goes on after
    /// its own instruction). `false`: no such set.
    fn release_synced(&mut self, w: &mut Warp) -> Res<bool> {
        let mut set: Vec<Group> = w.groups.iter().filter(|g| g.wait == Wait::Sync).copied().collect();
        loop {
            let union = set.iter().fold(0u32, |m, g| m | g.mask);
            let before = set.len();
            set.retain(|g| g.need & !union == 0);
            if set.len() == before {
                break;
            }
        }
        if set.is_empty() {
            return Ok(false);
        }
        let parts: Vec<(u32, u32)> = set.iter().map(|g| (g.pc, g.mask)).collect();
        self.exec_sync(w, &parts)?;
        w.groups
            .retain(|g| !(g.wait == Wait::Sync && set.iter().any(|s| s.pc == g.pc)));
        for g in set {
            w.push_group(g.pc + 1, g.mask, Wait::Ready);
        }
        Ok(true)
    }

    /// Every other instruction, for the lanes in `em`. Sources are read for all 32 lanes at
    /// once and the operation applied lane by lane in a plain loop (inactive lanes compute
    /// harmless garbage that is never written back): one dispatch per warp instruction, not
    /// per lane.
    #[inline(always)]
    fn exec(&mut self, w: &mut Warp, op: &Op, em: u32) -> Res<()> {
        let env = &self.env;
        macro_rules! map1 {
            ($d:expr, $a:expr, |$x:ident| $body:expr) => {{
                let xa = w.fetch(&$a, env);
                let mut o: Lanes = [0; 32];
                for l in 0..32 {
                    let $x = xa[l];
                    o[l] = $body;
                }
                w.put(&$d, em, &o);
            }};
        }
        macro_rules! map2 {
            ($d:expr, $a:expr, $b:expr, |$x:ident, $y:ident| $body:expr) => {{
                let xa = w.fetch(&$a, env);
                let ya = w.fetch(&$b, env);
                let mut o: Lanes = [0; 32];
                for l in 0..32 {
                    let ($x, $y) = (xa[l], ya[l]);
                    o[l] = $body;
                }
                w.put(&$d, em, &o);
            }};
        }
        macro_rules! map3 {
            ($d:expr, $a:expr, $b:expr, $c:expr, |$x:ident, $y:ident, $z:ident| $body:expr) => {{
                let xa = w.fetch(&$a, env);
                let ya = w.fetch(&$b, env);
                let za = w.fetch(&$c, env);
                let mut o: Lanes = [0; 32];
                for l in 0..32 {
                    let ($x, $y, $z) = (xa[l], ya[l], za[l]);
                    o[l] = $body;
                }
                w.put(&$d, em, &o);
            }};
        }
        #[inline(always)]
        fn f(x: u64) -> f32 {
            f32::from_bits(x as u32)
        }
        #[inline(always)]
        fn b(x: f32) -> u64 {
            float::canon32(x).to_bits() as u64
        }
        match *op {
            Op::Int { op, ty, d, a, b: bb } => match (op, ty.bits()) {
                (IntOp::Add, 64) => map2!(d, a, bb, |x, y| x.wrapping_add(y)),
                (IntOp::Add, 32) => map2!(d, a, bb, |x, y| (x as u32).wrapping_add(y as u32) as u64),
                (IntOp::Sub, 64) => map2!(d, a, bb, |x, y| x.wrapping_sub(y)),
                (IntOp::Sub, 32) => map2!(d, a, bb, |x, y| (x as u32).wrapping_sub(y as u32) as u64),
                (IntOp::MulLo, 64) => map2!(d, a, bb, |x, y| x.wrapping_mul(y)),
                (IntOp::MulLo, 32) => map2!(d, a, bb, |x, y| (x as u32).wrapping_mul(y as u32) as u64),
                (IntOp::And, _) => map2!(d, a, bb, |x, y| (x & y) & alu::mask(ty.bits())),
                (IntOp::Or, _) => map2!(d, a, bb, |x, y| (x | y) & alu::mask(ty.bits())),
                (IntOp::Xor, _) => map2!(d, a, bb, |x, y| (x ^ y) & alu::mask(ty.bits())),
                (IntOp::Shl, 64) => map2!(d, a, bb, |x, y| if y as u32 >= 64 { 0 } else { x << y as u32 }),
                (IntOp::Shl, 32) => {
                    map2!(d, a, bb, |x, y| if y as u32 >= 32 {
                        0
                    } else {
                        ((x as u32) << y as u32) as u64
                    })
                }
                _ => map2!(d, a, bb, |x, y| alu::int_bin(op, ty, x, y)),
            },
            Op::IntUn { op, ty, d, a } => map1!(d, a, |x| alu::int_un(op, ty, x)),
            Op::MulWide { ty, d, a, b: bb } => match ty {
                Ty::U32 => map2!(d, a, bb, |x, y| (x as u32 as u64) * (y as u32 as u64)),
                Ty::S32 => map2!(d, a, bb, |x, y| ((x as u32 as i32 as i64) * (y as u32 as i32 as i64))
                    as u64),
                _ => map2!(d, a, bb, |x, y| alu::mul_wide(ty, x, y)),
            },
            Op::Mad {
                ty,
                hi,
                wide,
                d,
                a,
                b: bb,
                c,
            } => {
                if !hi && !wide && ty.bits() == 32 {
                    map3!(
                        d,
                        a,
                        bb,
                        c,
                        |x, y, z| (x as u32).wrapping_mul(y as u32).wrapping_add(z as u32) as u64
                    )
                } else {
                    map3!(d, a, bb, c, |x, y, z| alu::mad(ty, hi, wide, x, y, z))
                }
            }
            Op::Bfe { ty, d, a, b: bb, c } => map3!(d, a, bb, c, |x, y, z| alu::bfe(ty, x, y, z)),
            Op::Bfi {
                ty,
                d,
                a,
                b: bb,
                pos,
                len,
            } => {
                let pa = w.fetch(&pos, env);
                let la = w.fetch(&len, env);
                let xa = w.fetch(&a, env);
                let ya = w.fetch(&bb, env);
                let mut o: Lanes = [0; 32];
                for l in 0..32 {
                    o[l] = alu::bfi(ty, xa[l], ya[l], pa[l], la[l]);
                }
                w.put(&d, em, &o);
            }
            Op::PredLogic { op, d, a, b: bb } => {
                let (x, y) = (w.pred_mask(&a), w.pred_mask(&bb));
                let r = match op {
                    PredOp::And => x & y,
                    PredOp::Or => x | y,
                    PredOp::Xor => x ^ y,
                    PredOp::Not => !x,
                };
                w.put_pred(&d, em, r);
            }
            Op::FBin { op, m, d, a, b: bb } => {
                if m.prec == Prec::F32 && matches!(op, FBinOp::Add | FBinOp::Sub | FBinOp::Mul) {
                    self.stats.flops_f32 += em.count_ones() as u64;
                }
                let plain = m.prec == Prec::F32 && m.rnd == Rnd::Rn && !m.ftz && !m.sat;
                match op {
                    FBinOp::Add if plain => map2!(d, a, bb, |x, y| b(f(x) + f(y))),
                    FBinOp::Sub if plain => map2!(d, a, bb, |x, y| b(f(x) - f(y))),
                    FBinOp::Mul if plain => map2!(d, a, bb, |x, y| b(f(x) * f(y))),
                    FBinOp::Max if m.prec == Prec::F32 && !m.ftz && !m.nan => {
                        map2!(d, a, bb, |x, y| float::max32(f(x), f(y), false).to_bits() as u64)
                    }
                    FBinOp::Min if m.prec == Prec::F32 && !m.ftz && !m.nan => {
                        map2!(d, a, bb, |x, y| float::min32(f(x), f(y), false).to_bits() as u64)
                    }
                    _ => map2!(d, a, bb, |x, y| float::fbin(op, &m, x, y)),
                }
            }
            Op::Fma { m, d, a, b: bb, c } => {
                if m.prec == Prec::F32 {
                    self.stats.flops_f32 += 2 * em.count_ones() as u64;
                }
                if m.prec == Prec::F32 && m.rnd == Rnd::Rn && !m.ftz && !m.sat {
                    map3!(d, a, bb, c, |x, y, z| b(f(x).mul_add(f(y), f(z))))
                } else {
                    map3!(d, a, bb, c, |x, y, z| float::ffma(&m, x, y, z))
                }
            }
            Op::FUn { op, m, d, a } => match op {
                FUnOp::Neg if m.prec == Prec::F32 && !m.ftz => map1!(d, a, |x| x ^ 0x8000_0000),
                FUnOp::Abs if m.prec == Prec::F32 && !m.ftz => map1!(d, a, |x| x & 0x7fff_ffff),
                _ => map1!(d, a, |x| float::fun(op, &m, x)),
            },
            Op::Setp {
                cmp,
                ty,
                ftz,
                comb,
                p,
                q,
                a,
                b: bb,
            } => {
                let xa = w.fetch(&a, env);
                let ya = w.fetch(&bb, env);
                let mut r = 0u32;
                for l in 0..32 {
                    r |= (alu::compare(cmp, ty, ftz, xa[l], ya[l]) as u32) << l;
                }
                let (pv, qv) = match comb {
                    None => (r, !r),
                    Some((bop, c)) => {
                        let cm = w.pred_mask(&c);
                        let g = |x: u32| match bop {
                            BoolOp::And => x & cm,
                            BoolOp::Or => x | cm,
                            BoolOp::Xor => x ^ cm,
                        };
                        (g(r), g(!r))
                    }
                };
                w.put_pred(&p, em, pv);
                w.put_pred(&q, em, qv);
            }
            Op::Selp { d, a, b: bb, c, .. } => {
                let cm = w.pred_mask(&c);
                let xa = w.fetch(&a, env);
                let ya = w.fetch(&bb, env);
                let mut o: Lanes = [0; 32];
                for l in 0..32 {
                    o[l] = if cm >> l & 1 == 1 { xa[l] } else { ya[l] };
                }
                w.put(&d, em, &o);
            }
            Op::Cvt {
                dty,
                sty,
                rnd,
                irnd,
                sat,
                ftz,
                d,
                a,
            } => match (dty, sty, sat, ftz) {
                // Widening and narrowing between integers of the same signedness dominate.
                (Ty::U64, Ty::U32, false, _) | (Ty::U64, Ty::B32, false, _) => map1!(d, a, |x| x & 0xffff_ffff),
                (Ty::S64, Ty::S32, false, _) => map1!(d, a, |x| x as u32 as i32 as i64 as u64),
                (Ty::U32, Ty::U64, false, _) | (Ty::S32, Ty::S64, false, _) | (Ty::U32, Ty::S64, false, _) => {
                    map1!(d, a, |x| x & 0xffff_ffff)
                }
                _ => map1!(d, a, |x| alu::cvt(dty, sty, rnd, irnd, sat, ftz, x)),
            },
            Op::Mov { d, a } => {
                let xa = w.fetch(&a, env);
                w.put(&d, em, &xa);
            }
            Op::MovPack { half_bits, d, lo, hi } => {
                let m = alu::mask(half_bits);
                map2!(d, lo, hi, |x, y| (x & m) | ((y & m) << half_bits))
            }
            Op::MovUnpack { half_bits, lo, hi, a } => {
                let m = alu::mask(half_bits);
                let xa = w.fetch(&a, env);
                let mut l0: Lanes = [0; 32];
                let mut h0: Lanes = [0; 32];
                for l in 0..32 {
                    l0[l] = xa[l] & m;
                    h0[l] = (xa[l] >> half_bits) & m;
                }
                w.put(&lo, em, &l0);
                w.put(&hi, em, &h0);
            }
            Op::Cvta {
                to_generic,
                space,
                d,
                a,
            } => {
                let window = match space {
                    Space::Shared => SHARED_WINDOW,
                    Space::Param => PARAM_WINDOW,
                    _ => 0,
                };
                if to_generic {
                    map1!(d, a, |x| x.wrapping_add(window))
                } else {
                    map1!(d, a, |x| x.wrapping_sub(window))
                }
            }
            Op::ActiveMask { d } => {
                let m = [w.mask as u64; 32];
                w.put(&d, em, &m);
            }
            Op::Ld {
                space,
                ty,
                n,
                d,
                base,
                off,
                nc,
            } => {
                let read = if nc { Access::ReadNc } else { Access::Read };
                let size = ty.bytes();
                let addrs = w.fetch(&base, &self.env);
                self.count_memory(space, false, &addrs, off, em, size * n as u32);
                if n == 1 && space == Space::Global {
                    let mut o: Lanes = [0; 32];
                    lanes!(em, l, {
                        let raw = self.global_access(w, l, addrs[l].wrapping_add(off as u64), size, read)?;
                        o[l] = load_extend(raw, ty, &d[0]);
                    });
                    w.put(&d[0], em, &o);
                } else if space == Space::Param && matches!(base, Src::Imm(_)) {
                    // A kernel parameter by name: the same value for every lane, read once.
                    let l = em.trailing_zeros() as usize;
                    let vec_bytes = size * n as u32;
                    for k in 0..n as usize {
                        let raw = self.access(
                            w,
                            l,
                            space,
                            addrs[l].wrapping_add(off as u64),
                            size,
                            vec_bytes,
                            k,
                            Access::Read,
                        )?;
                        let v = [load_extend(raw, ty, &d[k]); 32];
                        w.put(&d[k], em, &v);
                    }
                } else {
                    let vec_bytes = size * n as u32;
                    for k in 0..n as usize {
                        let mut o: Lanes = [0; 32];
                        lanes!(em, l, {
                            let addr = addrs[l].wrapping_add(off as u64);
                            let raw = self.access(w, l, space, addr, size, vec_bytes, k, read)?;
                            o[l] = load_extend(raw, ty, &d[k]);
                        });
                        w.put(&d[k], em, &o);
                    }
                }
            }
            Op::St {
                space,
                ty,
                n,
                v,
                base,
                off,
            } => {
                let size = ty.bytes();
                let addrs = w.fetch(&base, &self.env);
                self.count_memory(space, true, &addrs, off, em, size * n as u32);
                let vmask = alu::mask(size * 8);
                if n == 1 && space == Space::Global {
                    let vals = w.fetch(&v[0], &self.env);
                    lanes!(em, l, {
                        self.global_access(
                            w,
                            l,
                            addrs[l].wrapping_add(off as u64),
                            size,
                            Access::Write(vals[l] & vmask),
                        )?;
                    });
                } else {
                    let vec_bytes = size * n as u32;
                    for k in 0..n as usize {
                        let vals = w.fetch(&v[k], &self.env);
                        lanes!(em, l, {
                            let addr = addrs[l].wrapping_add(off as u64);
                            self.access(w, l, space, addr, size, vec_bytes, k, Access::Write(vals[l] & vmask))?;
                        });
                    }
                }
            }
            Op::Bra { .. } | Op::Exit | Op::Bar { .. } | Op::Shfl { .. } | Op::Vote { .. } => {
                unreachable!("control instructions are handled by the warp loop")
            }
        }
        Ok(())
    }

    /// Count one warp-wide load or store of `bytes` per lane at `addrs + off` (see
    /// [`super::MemCounters`]). Generic addresses count where they land (decided by the first
    /// active lane); parameter reads are not memory traffic.
    fn count_memory(&mut self, space: Space, store: bool, addrs: &Lanes, off: i64, em: u32, bytes: u32) {
        let first = em.trailing_zeros() as usize;
        if first >= 32 {
            return;
        }
        let mut a = [0u64; 32];
        let mut n = 0;
        lanes!(em, l, {
            a[n] = addrs[l].wrapping_add(off as u64);
            n += 1;
        });
        let m = &mut self.stats.mem;
        match resolve_space(space, a[0]) {
            Space::Global => {
                let (sectors, ideal) = global_sectors(&mut a[..n], bytes);
                if store {
                    m.global_store_requests += 1;
                    m.global_store_sectors += sectors;
                    m.global_store_ideal_sectors += ideal;
                } else {
                    m.global_load_requests += 1;
                    m.global_load_sectors += sectors;
                    m.global_load_ideal_sectors += ideal;
                }
            }
            Space::Shared => {
                let base = if space == Space::Generic { SHARED_WINDOW } else { 0 };
                let (waves, ideal) = shared_wavefronts(addrs, off, base, em, bytes);
                if store {
                    m.shared_store_requests += 1;
                    m.shared_store_wavefronts += waves;
                    m.shared_store_ideal_wavefronts += ideal;
                } else {
                    m.shared_load_requests += 1;
                    m.shared_load_wavefronts += waves;
                    m.shared_load_ideal_wavefronts += ideal;
                }
            }
            _ => {}
        }
    }

    /// Element `k` (of `size` bytes) of a `vec_bytes`-wide access at `addr` by lane `l`.
    #[allow(clippy::too_many_arguments)]
    fn access(
        &mut self,
        w: &mut Warp,
        l: usize,
        space: Space,
        addr: u64,
        size: u32,
        vec_bytes: u32,
        k: usize,
        acc: Access,
    ) -> Res<u64> {
        let write = matches!(acc, Access::Write(_));
        // The hardware requires the whole access to be aligned to its width.
        if addr & (vec_bytes as u64 - 1) != 0 {
            let detail = format!(
                "misaligned {}-byte {} in {} memory",
                vec_bytes,
                if write { "store" } else { "load" },
                space_name(space, addr)
            );
            return Err(self.finding(CheckKind::Memcheck, w, l, Some(addr), detail));
        }
        let ea = addr + (k as u64) * size as u64;
        match resolve_space(space, ea) {
            Space::Shared => self.shared_access(
                w,
                l,
                ea.wrapping_sub(if space == Space::Generic { SHARED_WINDOW } else { 0 }),
                size,
                acc,
            ),
            Space::Param => {
                let off = if space == Space::Generic || ea >= PARAM_WINDOW {
                    ea - PARAM_WINDOW
                } else {
                    ea
                };
                if write {
                    return Err(self.finding(
                        CheckKind::Memcheck,
                        w,
                        l,
                        Some(ea),
                        "store to the kernel's parameters".into(),
                    ));
                }
                let p = self.ctx.params;
                if off.checked_add(size as u64).is_none_or(|e| e > p.len() as u64) {
                    let detail = format!(
                        "load of {size} bytes at offset {off} of a {}-byte parameter buffer",
                        p.len()
                    );
                    return Err(self.finding(CheckKind::Memcheck, w, l, Some(ea), detail));
                }
                let mut v = 0u64;
                for i in 0..size as usize {
                    v |= (p[off as usize + i] as u64) << (8 * i);
                }
                Ok(v)
            }
            _ => self.global_access(w, l, ea, size, acc),
        }
    }

    #[inline(always)]
    fn global_access(&mut self, w: &mut Warp, l: usize, addr: u64, size: u32, acc: Access) -> Res<u64> {
        let snap = self.ctx.snap;
        let write = matches!(acc, Access::Write(_));
        let ai = match snap.allocs.get(w.alloc_hint) {
            Some(a) if addr >= a.base && addr < a.padded_end() => w.alloc_hint,
            _ => match snap.find(addr) {
                Some(i) => i,
                None => return Err(self.unmapped(w, l, addr, size, write)),
            },
        };
        w.alloc_hint = ai;
        let a = &snap.allocs[ai];
        if addr & (size as u64 - 1) != 0 {
            let detail = format!(
                "misaligned {size}-byte {} in global memory",
                if write { "store" } else { "load" }
            );
            return Err(self.finding(CheckKind::Memcheck, w, l, Some(addr), detail));
        }
        let end = addr + size as u64;
        if end > a.end() && (self.ctx.checks.memcheck || end > a.padded_end()) {
            return Err(self.past_end(w, l, addr, size, write, a));
        }
        let off = (addr - a.base) as usize;
        let wi = off / 4;
        if self.ctx.shadow && a.has_shadow() {
            self.shadow_global(w, l, a, addr, wi, (size as usize).div_ceil(4), acc)?;
        }
        match acc {
            Access::Read | Access::ReadNc => {
                self.stats.global_load_bytes += size as u64;
                Ok(match size {
                    4 => a.word(wi).load(Relaxed) as u64,
                    8 => a.word(wi).load(Relaxed) as u64 | (a.word(wi + 1).load(Relaxed) as u64) << 32,
                    _ => {
                        let shift = (off % 4) * 8;
                        (a.word(wi).load(Relaxed) >> shift) as u64 & alu::mask(size * 8)
                    }
                })
            }
            Access::Write(v) => {
                self.stats.global_store_bytes += size as u64;
                match size {
                    4 => a.word(wi).store(v as u32, Relaxed),
                    8 => {
                        a.word(wi).store(v as u32, Relaxed);
                        a.word(wi + 1).store((v >> 32) as u32, Relaxed);
                    }
                    _ => {
                        // 1 or 2 bytes, aligned: inside one word.
                        let shift = (off % 4) * 8;
                        let m = (alu::mask(size * 8) as u32) << shift;
                        let _ = a
                            .word(wi)
                            .fetch_update(Relaxed, Relaxed, |x| Some((x & !m) | ((v as u32) << shift)));
                    }
                }
                Ok(0)
            }
        }
    }

    /// The access records of the words `wi..wi+nwords` of `a` (see `check`): initcheck and
    /// racecheck for this access, then this access's record.
    #[allow(clippy::too_many_arguments)]
    fn shadow_global(
        &self,
        w: &Warp,
        l: usize,
        a: &crate::memory::Allocation,
        addr: u64,
        wi: usize,
        nwords: usize,
        acc: Access,
    ) -> Res<()> {
        let write = matches!(acc, Access::Write(_));
        let checks = self.ctx.checks;
        let me = self.env.me_base | w.tlin[l] as u64;
        let aliased = self.env.interval >= 1 << 15;
        for i in wi..wi + nwords {
            if write {
                if !checks.racecheck {
                    a.wshadow[i].store(me, Relaxed);
                    continue;
                }
                // Publish, then look at the readers (Dekker: see check.rs).
                let wrec = a.wshadow[i].swap(me, SeqCst);
                if check::global_conflict(wrec, me, aliased) {
                    return Err(self.race(w, l, addr, "written", "written", wrec));
                }
                let rrec = a.rshadow[i].load(SeqCst);
                if check::global_conflict(rrec, me, aliased) {
                    return Err(self.race(w, l, addr, "written", "read", rrec));
                }
            } else {
                if checks.racecheck {
                    let r = a.rshadow[i].load(SeqCst);
                    if check::global_read_record(r, me).is_some() {
                        let _ = a.rshadow[i].fetch_update(SeqCst, SeqCst, |cur| check::global_read_record(cur, me));
                    }
                }
                let wrec = a.wshadow[i].load(SeqCst);
                if checks.initcheck && wrec == 0 {
                    let detail = format!(
                        "{}-byte load of device memory never written since its allocation (0x{:x}, {} bytes)",
                        nwords * 4,
                        a.base,
                        a.size
                    );
                    return Err(self.finding(CheckKind::Initcheck, w, l, Some(addr), detail));
                }
                if checks.racecheck && check::global_conflict(wrec, me, aliased) {
                    return Err(self.race(w, l, addr, "read", "written", wrec));
                }
                if checks.racecheck && acc == Access::ReadNc && check::same_launch(wrec, me) {
                    let detail = "ld.global.nc reads a word this launch wrote: the non-coherent read-only path \
                                  may return the value from before the write (drop .nc, i.e. the const \
                                  __restrict__ qualifier, or do not write the data in this kernel)"
                        .to_string();
                    return Err(self.finding(CheckKind::Racecheck, w, l, Some(addr), detail));
                }
            }
        }
        Ok(())
    }

    /// memcheck's report of an access that no live allocation holds.
    fn unmapped(&self, w: &Warp, l: usize, addr: u64, size: u32, write: bool) -> Stop {
        let what = if write { "store" } else { "load" };
        if let Some(a) = self.ctx.snap.just_before(addr) {
            return self.past_end(w, l, addr, size, write, a);
        }
        let why = if (self.ctx.was_freed)(addr) {
            "in an allocation that was freed (use after free)"
        } else {
            "outside every device allocation"
        };
        self.finding(
            CheckKind::Memcheck,
            w,
            l,
            Some(addr),
            format!("{size}-byte {what} {why}"),
        )
    }

    fn past_end(&self, w: &Warp, l: usize, addr: u64, size: u32, write: bool, a: &crate::memory::Allocation) -> Stop {
        let detail = format!(
            "{size}-byte {} {} bytes past the end of a {}-byte allocation at 0x{:x} (its last byte is 0x{:x})",
            if write { "store" } else { "load" },
            addr + size as u64 - a.end(),
            a.size,
            a.base,
            a.end() - 1
        );
        self.finding(CheckKind::Memcheck, w, l, Some(addr), detail)
    }

    fn race(&self, w: &Warp, l: usize, addr: u64, this: &str, other_did: &str, rec: u64) -> Stop {
        let other = check::AccessRec::unpack(rec);
        let nb = self.ctx.block;
        let ot = other.thread;
        let other_tid = [ot % nb[0], (ot / nb[0]) % nb[1], ot / (nb[0] * nb[1])];
        let g = self.ctx.grid;
        let ob = other.block;
        let other_block = [ob % g[0], (ob / g[0]) % g[1], ob / (g[0] * g[1])];
        let same_block = other.block == (self.env.block_linear & 0x3_ffff);
        let who = if check::AccessRec::multi_block(rec) {
            "threads of several blocks".to_string()
        } else if check::AccessRec::multi(rec) {
            "several threads".to_string()
        } else if same_block {
            format!(
                "thread ({},{},{}) of the same block",
                other_tid[0], other_tid[1], other_tid[2]
            )
        } else {
            format!(
                "thread ({},{},{}) of block ({},{},{})",
                other_tid[0], other_tid[1], other_tid[2], other_block[0], other_block[1], other_block[2]
            )
        };
        let detail = format!(
            "data race on global memory: this word is {this} here and was {other_did} by {who} in the same launch, \
             with no barrier between"
        );
        self.finding(CheckKind::Racecheck, w, l, Some(addr), detail)
    }

    fn shared_access(&mut self, w: &mut Warp, l: usize, off: u64, size: u32, acc: Access) -> Res<u64> {
        let write = matches!(acc, Access::Write(_));
        if off.checked_add(size as u64).is_none_or(|e| e > self.shared.size as u64) {
            let detail = format!(
                "{size}-byte {} at offset {} of shared memory, which is {} bytes for this launch",
                if write { "store" } else { "load" },
                off as i64,
                self.shared.size
            );
            return Err(self.finding(CheckKind::Memcheck, w, l, Some(off), detail));
        }
        let off = off as usize;
        let wi = off / 4;
        let nwords = (size as usize).div_ceil(4);
        let checks = self.ctx.checks;
        if checks.racecheck || checks.initcheck {
            let me = w.tlin[l];
            let iv = self.env.interval;
            for i in wi..wi + nwords {
                let wrec = self.shared.wshadow[i];
                if write {
                    if checks.racecheck {
                        let rrec = self.shared.rshadow[i];
                        if check::shared::conflict(wrec, iv, me) {
                            return Err(self.shared_race(w, l, off, "written", "written", wrec));
                        }
                        if check::shared::conflict(rrec, iv, me) {
                            return Err(self.shared_race(w, l, off, "written", "read", rrec));
                        }
                    }
                    self.shared.wshadow[i] = check::shared::pack(iv, me);
                } else {
                    if checks.initcheck && wrec == 0 {
                        let detail =
                            format!("{size}-byte load of shared memory not written in this launch (offset {off})");
                        return Err(self.finding(CheckKind::Initcheck, w, l, Some(off as u64), detail));
                    }
                    if checks.racecheck {
                        if check::shared::conflict(wrec, iv, me) {
                            return Err(self.shared_race(w, l, off, "read", "written", wrec));
                        }
                        let r = &mut self.shared.rshadow[i];
                        if *r & check::shared::WRITTEN == 0 || check::shared::interval(*r) != iv {
                            *r = check::shared::pack(iv, me);
                        } else if check::shared::thread(*r) != me {
                            *r |= check::shared::MULTI;
                        }
                    }
                }
            }
        }
        match acc {
            Access::Read | Access::ReadNc => Ok(match size {
                4 if off % 4 == 0 => self.shared.words[wi] as u64,
                8 => self.shared.words[wi] as u64 | (self.shared.words[wi + 1] as u64) << 32,
                _ => {
                    let mut v = 0u64;
                    for i in 0..size as usize {
                        let o = off + i;
                        v |= (((self.shared.words[o / 4] >> ((o % 4) * 8)) & 0xff) as u64) << (8 * i);
                    }
                    v
                }
            }),
            Access::Write(v) => {
                match size {
                    4 if off % 4 == 0 => self.shared.words[wi] = v as u32,
                    8 => {
                        self.shared.words[wi] = v as u32;
                        self.shared.words[wi + 1] = (v >> 32) as u32;
                    }
                    _ => {
                        for i in 0..size as usize {
                            let o = off + i;
                            let shift = (o % 4) * 8;
                            let x = &mut self.shared.words[o / 4];
                            *x = (*x & !(0xff << shift)) | ((((v >> (8 * i)) & 0xff) as u32) << shift);
                        }
                    }
                }
                Ok(0)
            }
        }
    }

    fn shared_race(&self, w: &Warp, l: usize, off: usize, this: &str, other_did: &str, rec: u64) -> Stop {
        let ot = check::shared::thread(rec);
        let nb = self.ctx.block;
        let who = if rec & check::shared::MULTI != 0 {
            "several threads".to_string()
        } else {
            format!(
                "thread ({},{},{})",
                ot % nb[0],
                (ot / nb[0]) % nb[1],
                ot / (nb[0] * nb[1])
            )
        };
        let detail = format!(
            "data race on shared memory (offset {off}): this word is {this} here and was {other_did} by {who} \
             since the last barrier (a missing __syncthreads?)"
        );
        self.finding(CheckKind::Racecheck, w, l, Some(off as u64), detail)
    }
}

/// `shfl.sync`'s source lane and predicate for lane `lane` (PTX ISA, `shfl.sync` pseudo-code):
/// `c` packs the clamp value (bits 4:0) and the segment mask (bits 12:8).
fn shfl_source(mode: ShflMode, lane: u32, b: u32, c: u32) -> (i32, bool) {
    let bval = b & 31;
    let seg = (c >> 8) & 31;
    let clamp = c & 31;
    let max_lane = (lane & seg) | (clamp & !seg);
    let min_lane = lane & seg;
    match mode {
        ShflMode::Up => {
            let j = lane as i32 - bval as i32;
            (j, j >= max_lane as i32)
        }
        ShflMode::Down => {
            let j = (lane + bval) as i32;
            (j, j <= max_lane as i32)
        }
        ShflMode::Bfly => {
            let j = (lane ^ bval) as i32;
            (j, j <= max_lane as i32)
        }
        ShflMode::Idx => {
            let j = (min_lane | (bval & !seg)) as i32;
            (j, j <= max_lane as i32)
        }
    }
}

/// The 32-byte sectors a warp's accesses of `bytes` each touch, and the fewest sectors that could
/// carry the distinct bytes they use. Sorts `a` (the lanes' addresses).
fn global_sectors(a: &mut [u64], bytes: u32) -> (u64, u64) {
    a.sort_unstable();
    let (mut sectors, mut distinct) = (0u64, 0u64);
    let (mut last_addr, mut last_sector) = (u64::MAX, u64::MAX);
    for &x in a.iter() {
        if x != last_addr {
            distinct += 1;
            last_addr = x;
        }
        // An access of ≤ 32 aligned bytes lies in one sector; a wider one spans several.
        // Addresses ascend, so a sector above the last one counted is a new one.
        for s in x >> 5..=(x + bytes as u64 - 1) >> 5 {
            if last_sector == u64::MAX || s > last_sector {
                sectors += 1;
                last_sector = s;
            }
        }
    }
    (sectors, (distinct * bytes as u64).div_ceil(32))
}

/// Shared-memory wavefronts of one warp-wide access of `bytes` per lane, and the fewest
/// possible: the warp is served in phases of `128 / bytes` lanes (1 phase for 4-byte accesses, 2
/// for 8, 4 for 16); a phase takes as many wavefronts as the most distinct 4-byte words any one of
/// the 32 banks must deliver (the same word to several lanes is a broadcast, not a conflict).
fn shared_wavefronts(addrs: &Lanes, off: i64, base: u64, em: u32, bytes: u32) -> (u64, u64) {
    let bytes = bytes.clamp(4, 16);
    let lanes_per_phase = (128 / bytes) as usize;
    let words_per_lane = (bytes / 4) as u64;
    let (mut waves, mut ideal) = (0u64, 0u64);
    for phase in 0..32 / lanes_per_phase {
        let pm = (em >> (phase * lanes_per_phase)) & ((1u64 << lanes_per_phase) - 1) as u32;
        if pm == 0 {
            continue;
        }
        ideal += 1;
        let mut words = [u64::MAX; 32];
        let mut k = 0;
        for i in 0..lanes_per_phase {
            if pm >> i & 1 == 1 {
                let w0 = addrs[phase * lanes_per_phase + i]
                    .wrapping_add(off as u64)
                    .wrapping_sub(base)
                    >> 2;
                for j in 0..words_per_lane {
                    words[k] = w0 + j;
                    k += 1;
                }
            }
        }
        let words = &mut words[..k];
        words.sort_unstable();
        let mut per_bank = [0u8; 32];
        let mut last = u64::MAX;
        for &w in words.iter() {
            if w != last {
                per_bank[(w % 32) as usize] += 1;
                last = w;
            }
        }
        waves += *per_bank.iter().max().unwrap_or(&1) as u64;
    }
    (waves, ideal)
}

fn resolve_space(space: Space, addr: u64) -> Space {
    match space {
        Space::Generic => {
            if (SHARED_WINDOW..SHARED_WINDOW + SHARED_WINDOW_SIZE).contains(&addr) {
                Space::Shared
            } else if (PARAM_WINDOW..PARAM_WINDOW + (1 << 32)).contains(&addr) {
                Space::Param
            } else {
                Space::Global
            }
        }
        s => s,
    }
}

fn space_name(space: Space, addr: u64) -> &'static str {
    match resolve_space(space, addr) {
        Space::Shared => "shared",
        Space::Param => "parameter",
        _ => "global",
    }
}

/// A loaded value as its destination register holds it: sign-extended for signed types
/// narrower than the register.
#[inline]
fn load_extend(raw: u64, ty: Ty, d: &Dst) -> u64 {
    if ty.is_signed() && ty.bits() < 64 {
        let v = alu::sext(raw, ty.bits()) as u64;
        match d {
            Dst::R32(_) => v & 0xffff_ffff,
            _ => v,
        }
    } else {
        raw
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sectors_of_coalesced_strided_and_broadcast_accesses() {
        // 32 consecutive floats: 128 bytes, 4 sectors, all of them needed.
        let mut a: Vec<u64> = (0..32).map(|l| 0x1000 + 4 * l).collect();
        assert_eq!(global_sectors(&mut a, 4), (4, 4));
        // A stride of 32 floats: every lane in its own sector, 4 would do.
        let mut a: Vec<u64> = (0..32).map(|l| 0x1000 + 128 * l).collect();
        assert_eq!(global_sectors(&mut a, 4), (32, 4));
        // Every lane reads the same word: one sector, one needed.
        let mut a = vec![0x1004u64; 32];
        assert_eq!(global_sectors(&mut a, 4), (1, 1));
        // float4 per lane, consecutive: 512 bytes, 16 sectors.
        let mut a: Vec<u64> = (0..32).map(|l| 0x2000 + 16 * l).collect();
        assert_eq!(global_sectors(&mut a, 16), (16, 16));
    }

    #[test]
    fn shared_bank_conflicts_follow_the_bank_rules() {
        let lanes = |f: &dyn Fn(u64) -> u64| -> Lanes { std::array::from_fn(|l| f(l as u64)) };
        // Consecutive words: one wavefront.
        assert_eq!(shared_wavefronts(&lanes(&|l| 4 * l), 0, 0, u32::MAX, 4), (1, 1));
        // A stride of 32 words: all 32 lanes in bank 0, 32 distinct words: 32 wavefronts.
        assert_eq!(shared_wavefronts(&lanes(&|l| 128 * l), 0, 0, u32::MAX, 4), (32, 1));
        // A stride of 2 words: two lanes per bank: 2 wavefronts.
        assert_eq!(shared_wavefronts(&lanes(&|l| 8 * l), 0, 0, u32::MAX, 4), (2, 1));
        // Broadcast: one word for everyone.
        assert_eq!(shared_wavefronts(&lanes(&|_| 64), 0, 0, u32::MAX, 4), (1, 1));
        // Stride 33 (a padded tile column): conflict-free.
        assert_eq!(shared_wavefronts(&lanes(&|l| 4 * 33 * l), 0, 0, u32::MAX, 4), (1, 1));
        // float4 per lane, consecutive: four quarter-warp phases, no conflict.
        assert_eq!(shared_wavefronts(&lanes(&|l| 16 * l), 0, 0, u32::MAX, 16), (4, 4));
        // Half the lanes active, 4-byte: still one wavefront.
        assert_eq!(shared_wavefronts(&lanes(&|l| 4 * l), 0, 0, 0x0000_ffff, 4), (1, 1));
    }
}
