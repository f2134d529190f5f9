//! The checks made on every launch — the four tools of NVIDIA's compute-sanitizer — and the
//! report a failed one gives.
//!
//! * **memcheck**: every global access lies inside a live allocation of its exact requested
//!   size and is aligned to its width; shared and parameter accesses inside their windows.
//! * **racecheck**: two threads of a block touch the same shared-memory word between two
//!   barriers and one of them writes; two threads of a launch write the same global word, or one
//!   reads a word another writes, with no barrier of their block between them.
//! * **initcheck**: a read of global memory never written since its allocation (copies and
//!   memsets write), or of shared memory not yet written in this launch.
//! * **synccheck**: a barrier that not every live thread of the block reaches (threads waiting
//!   at different `bar.sync` instructions, or lanes of a warp split between a barrier and
//!   elsewhere), a shuffle or vote whose member mask names a lane that does not take part, and a
//!   deadlock.
//!
//! # Access records
//! Each 4-byte word of global memory has two 64-bit shadow words: the last write and the first
//! read of the current launch, each an [`AccessRec`] packing
//! `[launch epoch:19][readers in several blocks:1][block:18][barrier interval:15][more readers:1]
//! [thread in block:10]`. A
//! record from another launch (another epoch) never conflicts; one from the same thread never
//! does; one from the same block but an earlier barrier interval is ordered by that barrier.
//! Anything else is a race. Word granularity: two threads writing different bytes of one word
//! count as touching the same word (vitcore's kernels move 4- and 8-byte values only).
//! Approximations, all towards missing a race rather than inventing one: a block index above
//! 2¹⁸ shares records with block − 2¹⁸; after a block's 2¹⁵th barrier its own records count as
//! ordered; and of several readers of one block only the first and a "more" flag are kept
//! (readers in two or more blocks are flagged as such: any write in the launch then conflicts). Blocks run on
//! several host threads at once: a writer swaps its record in and then reads the readers'
//! record, a reader publishes its record and then reads the writer's, both sequentially
//! consistent, so of two racing accesses at least one sees the other (Dekker's argument).
//! Shared memory keeps exact records (its interval counter is 32 bits).

/// Which check found the defect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckKind {
    Memcheck,
    Racecheck,
    Initcheck,
    Synccheck,
    /// A warp ran past the instruction limit: an endless loop (the hardware's watchdog).
    Watchdog,
}

impl std::fmt::Display for CheckKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CheckKind::Memcheck => "memcheck",
            CheckKind::Racecheck => "racecheck",
            CheckKind::Initcheck => "initcheck",
            CheckKind::Synccheck => "synccheck",
            CheckKind::Watchdog => "watchdog",
        })
    }
}

/// A defect found during a launch: what, and where (kernel, PTX line, block, thread, address).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub check: CheckKind,
    pub kernel: String,
    /// 1-based PTX line of the instruction.
    pub line: u32,
    /// That instruction's text.
    pub instr: String,
    /// `%ctaid` of the block.
    pub block: [u32; 3],
    /// `%tid` of the thread.
    pub thread: [u32; 3],
    pub address: Option<u64>,
    /// What was wrong, in words.
    pub detail: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let [bx, by, bz] = self.block;
        let [tx, ty, tz] = self.thread;
        write!(
            f,
            "{}: {} (kernel {}, PTX line {} `{}`, block ({bx},{by},{bz}), thread ({tx},{ty},{tz})",
            self.check, self.detail, self.kernel, self.line, self.instr
        )?;
        if let Some(a) = self.address {
            write!(f, ", address 0x{a:x}")?;
        }
        write!(f, ")")
    }
}

/// Which checks run. All by default; `CUDASIM_CHECKS=off` (or a comma list such as
/// `memcheck,synccheck`) changes that. Without memcheck, an access outside every allocation or
/// misaligned for its width is still an error — the hardware faults on both — but an access
/// past a buffer's requested size, inside its last 4-byte word, is not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checks {
    pub memcheck: bool,
    pub racecheck: bool,
    pub initcheck: bool,
    pub synccheck: bool,
}

impl Checks {
    pub const ALL: Checks = Checks {
        memcheck: true,
        racecheck: true,
        initcheck: true,
        synccheck: true,
    };
    pub const NONE: Checks = Checks {
        memcheck: false,
        racecheck: false,
        initcheck: false,
        synccheck: false,
    };

    /// From `CUDASIM_CHECKS`: unset, `all` or `on` → all; `off`, `none` or `0` → none; else a comma
    /// list of check names. An unknown name is an error.
    pub fn from_env() -> Result<Checks, String> {
        match std::env::var("CUDASIM_CHECKS") {
            Err(_) => Ok(Checks::ALL),
            Ok(v) => Checks::parse(&v),
        }
    }

    pub fn parse(v: &str) -> Result<Checks, String> {
        let v = v.trim().to_ascii_lowercase();
        match v.as_str() {
            "" | "all" | "on" | "1" => return Ok(Checks::ALL),
            "off" | "none" | "0" => return Ok(Checks::NONE),
            _ => {}
        }
        let mut c = Checks::NONE;
        for name in v.split(',').map(str::trim) {
            match name {
                "memcheck" => c.memcheck = true,
                "racecheck" => c.racecheck = true,
                "initcheck" => c.initcheck = true,
                "synccheck" => c.synccheck = true,
                other => {
                    return Err(format!(
                        "CUDASIM_CHECKS: unknown check `{other}` (expected all, off, or a list of \
                         memcheck, racecheck, initcheck, synccheck)"
                    ))
                }
            }
        }
        Ok(c)
    }

    /// Whether memory needs shadow state.
    pub fn need_shadow(&self) -> bool {
        self.racecheck || self.initcheck
    }
}

/// The shadow value of a word the host wrote (a copy or memset): written, by no launch.
pub const HOST_WRITE: u64 = 1;

/// Who makes an access, packed into a record (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccessRec {
    pub epoch: u32,
    pub block: u32,
    pub interval: u32,
    pub thread: u32,
}

/// Several threads of the record's block read the word (the record names the first).
const MULTI: u64 = 1 << 10;
/// Threads of more than one block read the word in the record's launch: any write in that
/// launch conflicts with one of them.
const MULTI_BLOCK: u64 = 1 << 44;
const EPOCH_SHIFT: u32 = 45;
/// Launch numbers (epochs) run from 1 to `EPOCH_LIMIT`; then every record is cleared.
pub const EPOCH_LIMIT: u32 = (1 << 19) - 1;

impl AccessRec {
    #[inline]
    pub fn pack(&self) -> u64 {
        ((self.epoch as u64 & EPOCH_LIMIT as u64) << EPOCH_SHIFT)
            | ((self.block as u64 & 0x3_ffff) << 26)
            | ((self.interval as u64 & 0x7fff) << 11)
            | (self.thread as u64 & 0x3ff)
    }
    #[inline]
    pub fn unpack(r: u64) -> AccessRec {
        AccessRec {
            epoch: (r >> EPOCH_SHIFT) as u32,
            block: ((r >> 26) & 0x3_ffff) as u32,
            interval: ((r >> 11) & 0x7fff) as u32,
            thread: (r & 0x3ff) as u32,
        }
    }
    /// Whether the record says several blocks read the word.
    pub fn multi_block(r: u64) -> bool {
        r & MULTI_BLOCK != 0
    }
    /// Whether the record says several threads read the word.
    pub fn multi(r: u64) -> bool {
        r & (MULTI | MULTI_BLOCK) != 0
    }
}

const EPOCH: u64 = !((1u64 << EPOCH_SHIFT) - 1);
const BLOCK: u64 = 0x3_ffff << 26;
const INTERVAL: u64 = 0x7fff << 11;
const THREAD: u64 = 0x3ff;

/// Whether an earlier global access record `r` conflicts with an access by `me` (`me_packed`
/// is `me.pack()`): same launch, another thread, not ordered by a barrier of their block.
/// `aliased`: the block has passed 2¹⁵ barriers or more, so a record's 15-bit interval may
/// stand for an older interval; a same-block record is then taken as ordered (a race may be
/// missed, none is invented).
#[inline]
pub fn global_conflict(r: u64, me_packed: u64, aliased: bool) -> bool {
    if (r ^ me_packed) & EPOCH != 0 {
        return false; // another launch (or the host, or never)
    }
    if r & MULTI_BLOCK != 0 {
        return true; // readers in two blocks: whoever writes, one of them is another block
    }
    let same_block = (r ^ me_packed) & BLOCK == 0;
    if same_block && ((r ^ me_packed) & INTERVAL != 0 || aliased) {
        return false; // a barrier of the block lies between (or may)
    }
    let same_thread = same_block && (r ^ me_packed) & THREAD == 0 && r & MULTI == 0;
    !same_thread
}

/// Whether record `r` was made by the launch `me_packed` belongs to.
#[inline]
pub fn same_launch(r: u64, me_packed: u64) -> bool {
    (r ^ me_packed) & EPOCH == 0
}

/// The read record to keep after `me` reads a word whose record is `r` (`None`: keep `r`).
#[inline]
pub fn global_read_record(r: u64, me_packed: u64) -> Option<u64> {
    if (r ^ me_packed) & EPOCH != 0 {
        return Some(me_packed); // the first read of this launch
    }
    if r & MULTI_BLOCK != 0 {
        return None; // nothing can make it more shared
    }
    if (r ^ me_packed) & BLOCK != 0 {
        return Some(r | MULTI | MULTI_BLOCK);
    }
    if (r ^ me_packed) & INTERVAL != 0 {
        // Only this block read it, before a barrier this read is after: a fresh record.
        return Some(me_packed);
    }
    if (r ^ me_packed) & THREAD != 0 && r & MULTI == 0 {
        return Some(r | MULTI);
    }
    None
}

/// Shared-memory records: `[interval:32][written:1][more readers:1][thread:10]`, exact.
pub mod shared {
    pub const WRITTEN: u64 = 1 << 15;
    pub const MULTI: u64 = 1 << 14;

    #[inline]
    pub fn pack(interval: u32, thread: u32) -> u64 {
        ((interval as u64) << 16) | WRITTEN | thread as u64
    }
    #[inline]
    pub fn thread(r: u64) -> u32 {
        (r & 0x3ff) as u32
    }
    #[inline]
    pub fn interval(r: u64) -> u32 {
        (r >> 16) as u32
    }
    /// Whether record `r` (a write, or a read record) conflicts with thread `me` in `interval`.
    #[inline]
    pub fn conflict(r: u64, interval_now: u32, me: u32) -> bool {
        r & WRITTEN != 0 && interval(r) == interval_now && (thread(r) != me || r & MULTI != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(epoch: u32, block: u32, interval: u32, thread: u32) -> u64 {
        AccessRec {
            epoch,
            block,
            interval,
            thread,
        }
        .pack()
    }

    #[test]
    fn records_round_trip() {
        let r = AccessRec {
            epoch: 77,
            block: 1234,
            interval: 9,
            thread: 1023,
        };
        assert_eq!(AccessRec::unpack(r.pack()), r);
    }

    #[test]
    fn conflicts_follow_threads_blocks_barriers_and_launches() {
        let me = rec(5, 3, 2, 7);
        assert!(!global_conflict(0, me, false)); // never written
        assert!(!global_conflict(HOST_WRITE, me, false));
        assert!(!global_conflict(rec(4, 3, 2, 8), me, false)); // another launch
        assert!(!global_conflict(rec(5, 3, 2, 7), me, false)); // myself
        assert!(!global_conflict(rec(5, 3, 1, 8), me, false)); // same block, before a barrier
        assert!(global_conflict(rec(5, 3, 2, 8), me, false)); // same block, same interval
        assert!(global_conflict(rec(5, 4, 2, 7), me, false)); // another block
        assert!(global_conflict(rec(5, 3, 2, 7) | MULTI, me, false)); // me and another reader
                                                                      // Past 2^15 barriers the interval field may alias: same-block records count as ordered.
        assert!(!global_conflict(rec(5, 3, 2, 8), me, true));
        assert!(global_conflict(rec(5, 4, 2, 7), me, true));
    }

    #[test]
    fn read_records_keep_other_readers_visible() {
        let a = rec(5, 3, 2, 7);
        let b = rec(5, 3, 2, 8);
        assert_eq!(global_read_record(0, a), Some(a));
        assert_eq!(global_read_record(a, a), None);
        assert_eq!(global_read_record(a, b), Some(a | MULTI));
        let other_block = rec(5, 9, 0, 8);
        let both = a | MULTI | MULTI_BLOCK;
        assert_eq!(global_read_record(a, other_block), Some(both));
        let later = rec(5, 3, 3, 8);
        assert_eq!(global_read_record(a, later), Some(later));
        // Once two blocks have read it, no later read drops that, and any write conflicts —
        // even one by the first reader's block after a barrier.
        assert_eq!(global_read_record(both, later), None);
        assert!(global_conflict(both, rec(5, 3, 7, 7), false));
        assert!(!global_conflict(both, rec(6, 3, 0, 7), false)); // not in another launch
    }

    #[test]
    fn checks_from_text() {
        assert_eq!(Checks::parse("off").unwrap(), Checks::NONE);
        let c = Checks::parse("memcheck, synccheck").unwrap();
        assert!(c.memcheck && c.synccheck && !c.racecheck);
        assert!(Checks::parse("memchek").unwrap_err().contains("memchek"));
    }
}
