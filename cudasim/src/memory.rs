//! Device memory: allocations in a simulated 64-bit address space, their contents, and the
//! shadow state the checks read (who wrote and read each 4-byte word, and when).
//!
//! * Addresses are never reused: each allocation starts 256 bytes (the alignment
//!   `cuMemAlloc` guarantees) after a guard gap beyond the previous one, so an access past the
//!   end of a buffer or into a freed one never lands in another live buffer and memcheck sees it.
//! * An allocation keeps its exact requested size; the words past it (to the next multiple of
//!   4) exist only so that storage is word-granular, and memcheck refuses them.
//! * Contents are `AtomicU32` words: blocks of a launch run on several host threads, and a racy
//!   kernel must not make the simulator itself undefined behaviour (a relaxed atomic load or
//!   store is a plain `mov` on x86-64).
//! * Shared memory is per block and touched by one host thread: plain vectors
//!   ([`SharedMem`]).

use crate::check::HOST_WRITE;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};

/// Where the simulated address space puts global allocations.
pub const GLOBAL_BASE: u64 = 0x7f00_0000_0000;
/// Generic addresses of shared memory: `cvta.shared` adds this to a shared-space offset.
pub const SHARED_WINDOW: u64 = 0x1000_0000_0000;
pub const SHARED_WINDOW_SIZE: u64 = 1 << 32;
/// Generic addresses of the kernel parameter buffer (`cvta.param`).
pub const PARAM_WINDOW: u64 = 0x2000_0000_0000;
/// Bytes left unmapped after every allocation.
const GUARD: u64 = 4096;

/// Why a host-side copy or memset was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeError(pub String);

/// One `cuMemAlloc`.
pub struct Allocation {
    pub base: u64,
    /// The size asked for, in bytes.
    pub size: u64,
    words: Box<[AtomicU32]>,
    /// Last write of each word (an [`AccessRec`]; 0: never written).
    pub(crate) wshadow: Box<[AtomicU64]>,
    /// First reader of each word in the current launch, with a flag for more readers.
    pub(crate) rshadow: Box<[AtomicU64]>,
}

fn zeroed_atomic32(n: usize) -> Box<[AtomicU32]> {
    // vec![0; n] is a calloc (pages are mapped lazily); AtomicU32 has u32's size, alignment and
    // bit validity, so the same memory can be viewed as atomics.
    let v: Box<[u32]> = vec![0u32; n].into_boxed_slice();
    let len = v.len();
    let ptr = Box::into_raw(v) as *mut AtomicU32;
    unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(ptr, len)) }
}

fn zeroed_atomic64(n: usize) -> Box<[AtomicU64]> {
    let v: Box<[u64]> = vec![0u64; n].into_boxed_slice();
    let len = v.len();
    let ptr = Box::into_raw(v) as *mut AtomicU64;
    unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(ptr, len)) }
}

impl Allocation {
    fn new(base: u64, size: u64, shadow: bool) -> Allocation {
        let n = size.div_ceil(4) as usize;
        let ns = if shadow { n } else { 0 };
        Allocation {
            base,
            size,
            words: zeroed_atomic32(n),
            wshadow: zeroed_atomic64(ns),
            rshadow: zeroed_atomic64(ns),
        }
    }
    pub fn end(&self) -> u64 {
        self.base + self.size
    }
    /// The end of the storage: the requested size rounded up to whole 4-byte words.
    #[inline]
    pub fn padded_end(&self) -> u64 {
        self.base + self.size.next_multiple_of(4)
    }
    pub fn has_shadow(&self) -> bool {
        !self.wshadow.is_empty()
    }
    #[inline]
    pub(crate) fn word(&self, i: usize) -> &AtomicU32 {
        &self.words[i]
    }
    /// Read `len` bytes at byte offset `off` (host copies).
    fn read(&self, off: u64, out: &mut [u8]) {
        for (k, b) in out.iter_mut().enumerate() {
            let o = off as usize + k;
            let w = self.words[o / 4].load(Relaxed);
            *b = (w >> ((o % 4) * 8)) as u8;
        }
    }
    /// Write bytes at byte offset `off` and mark the words written by the host.
    fn write(&self, off: u64, data: &[u8]) {
        let mut o = off as usize;
        let mut rest = data;
        // Whole aligned words in one store each; partial words by read-modify-write.
        while !rest.is_empty() {
            let wi = o / 4;
            if o % 4 == 0 && rest.len() >= 4 {
                let v = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
                self.words[wi].store(v, Relaxed);
                rest = &rest[4..];
                o += 4;
            } else {
                let shift = (o % 4) * 8;
                let old = self.words[wi].load(Relaxed);
                let v = (old & !(0xff << shift)) | ((rest[0] as u32) << shift);
                self.words[wi].store(v, Relaxed);
                rest = &rest[1..];
                o += 1;
            }
            if self.has_shadow() {
                self.wshadow[wi].store(HOST_WRITE, Relaxed);
                self.rshadow[wi].store(0, Relaxed);
            }
        }
    }
}

/// The device's global memory.
pub struct Memory {
    map: RwLock<BTreeMap<u64, Arc<Allocation>>>,
    next: Mutex<u64>,
    used: AtomicU64,
    /// Total bytes the device model offers.
    pub capacity: u64,
    /// Whether allocations carry shadow state (the checks need it; off saves memory and time).
    shadow: bool,
    /// Recently freed ranges, to say "freed" rather than "unallocated" in a report.
    freed: Mutex<Vec<(u64, u64)>>,
}

/// A launch's view of memory: every live allocation, sorted by address.
pub struct Snapshot {
    pub allocs: Vec<Arc<Allocation>>,
}

impl Snapshot {
    /// The allocation containing `addr`, if any.
    #[inline]
    pub fn find(&self, addr: u64) -> Option<usize> {
        let i = self.allocs.partition_point(|a| a.base <= addr);
        if i == 0 {
            return None;
        }
        let a = &self.allocs[i - 1];
        // Inside the allocation's words (the exact-size check is the caller's, for its message).
        (addr < a.padded_end()).then_some(i - 1)
    }

    /// The live allocation whose guard gap holds `addr` (an access just past its end).
    pub fn just_before(&self, addr: u64) -> Option<&Allocation> {
        let i = self.allocs.partition_point(|a| a.base <= addr);
        let a = self.allocs.get(i.checked_sub(1)?)?;
        (addr >= a.end() && addr < a.end() + GUARD).then_some(a.as_ref())
    }
}

impl Memory {
    pub fn new(capacity: u64, shadow: bool) -> Memory {
        Memory {
            map: RwLock::new(BTreeMap::new()),
            next: Mutex::new(GLOBAL_BASE),
            used: AtomicU64::new(0),
            capacity,
            shadow,
            freed: Mutex::new(Vec::new()),
        }
    }

    pub fn shadow_enabled(&self) -> bool {
        self.shadow
    }

    pub fn used(&self) -> u64 {
        self.used.load(Relaxed)
    }

    /// Allocate `size` bytes; `None` when the device model's memory is exhausted.
    pub fn alloc(&self, size: u64) -> Option<u64> {
        let size = size.max(1);
        let rounded = size.next_multiple_of(256);
        if self.used.fetch_add(rounded, Relaxed) + rounded > self.capacity {
            self.used.fetch_sub(rounded, Relaxed);
            return None;
        }
        let base = {
            let mut next = self.next.lock().unwrap();
            let base = next.next_multiple_of(256);
            *next = base + rounded + GUARD;
            base
        };
        let a = Arc::new(Allocation::new(base, size, self.shadow));
        self.map.write().unwrap().insert(base, a);
        Some(base)
    }

    /// Free the allocation that starts at `base`.
    pub fn free(&self, base: u64) -> Result<(), RangeError> {
        let a = self
            .map
            .write()
            .unwrap()
            .remove(&base)
            .ok_or_else(|| RangeError(format!("0x{base:x} is not the start of a live allocation")))?;
        self.used.fetch_sub(a.size.next_multiple_of(256), Relaxed);
        let mut f = self.freed.lock().unwrap();
        if f.len() > 4096 {
            f.drain(..2048);
        }
        f.push((a.base, a.end()));
        Ok(())
    }

    /// Whether `addr` was in an allocation freed earlier.
    pub fn was_freed(&self, addr: u64) -> bool {
        self.freed.lock().unwrap().iter().any(|&(b, e)| addr >= b && addr < e)
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            allocs: self.map.read().unwrap().values().cloned().collect(),
        }
    }

    /// The allocation that holds all of `[addr, addr+len)`.
    fn range(&self, addr: u64, len: u64, what: &str) -> Result<(Arc<Allocation>, u64), RangeError> {
        let map = self.map.read().unwrap();
        let a = map.range(..=addr).next_back().map(|(_, a)| a.clone());
        match a {
            Some(a) if addr + len <= a.end() => Ok((a.clone(), addr - a.base)),
            Some(a) if addr < a.end() => Err(RangeError(format!(
                "{what} of {len} bytes at 0x{addr:x} runs past the end of its allocation \
                 (0x{:x}, {} bytes) by {} bytes",
                a.base,
                a.size,
                addr + len - a.end()
            ))),
            _ => Err(RangeError(format!(
                "{what} of {len} bytes at 0x{addr:x}: not a live device allocation"
            ))),
        }
    }

    pub fn write(&self, addr: u64, data: &[u8]) -> Result<(), RangeError> {
        if data.is_empty() {
            return Ok(());
        }
        let (a, off) = self.range(addr, data.len() as u64, "copy to the device")?;
        a.write(off, data);
        Ok(())
    }

    pub fn read(&self, addr: u64, out: &mut [u8]) -> Result<(), RangeError> {
        if out.is_empty() {
            return Ok(());
        }
        let (a, off) = self.range(addr, out.len() as u64, "copy from the device")?;
        a.read(off, out);
        Ok(())
    }

    /// `cuMemsetD8` / `D16` / `D32`: `count` elements of `value`'s width.
    pub fn memset(&self, addr: u64, value: u32, width: u32, count: u64) -> Result<(), RangeError> {
        let bytes = count * width as u64;
        if bytes == 0 {
            return Ok(());
        }
        let (a, off) = self.range(addr, bytes, "memset")?;
        let pattern: Vec<u8> = match width {
            1 => vec![value as u8],
            2 => (value as u16).to_le_bytes().to_vec(),
            _ => value.to_le_bytes().to_vec(),
        };
        let data: Vec<u8> = pattern.iter().copied().cycle().take(bytes as usize).collect();
        a.write(off, &data);
        Ok(())
    }

    /// Device-to-device copy.
    pub fn copy(&self, dst: u64, src: u64, len: u64) -> Result<(), RangeError> {
        if len == 0 {
            return Ok(());
        }
        let mut tmp = vec![0u8; len as usize];
        self.read(src, &mut tmp)?;
        self.write(dst, &tmp)?;
        // A copy of never-written memory is still never written (initcheck must not lose it):
        // carry the source's state over, word by word where both ends are word-aligned.
        let (sa, _) = self.range(src, len, "copy")?;
        let (da, _) = self.range(dst, len, "copy")?;
        if sa.has_shadow() && da.has_shadow() && (src - sa.base) % 4 == 0 && (dst - da.base) % 4 == 0 {
            let (si, di) = (((src - sa.base) / 4) as usize, ((dst - da.base) / 4) as usize);
            for k in 0..(len / 4) as usize {
                if sa.wshadow[si + k].load(Relaxed) == 0 {
                    da.wshadow[di + k].store(0, Relaxed);
                }
            }
        }
        Ok(())
    }

    /// Mark `[addr, addr+len)` as never written, as if freshly allocated: for an allocator that
    /// recycles device memory, so initcheck sees a read of a recycled buffer before its new
    /// owner wrote it (the buffer's old contents are not the new owner's data).
    pub fn mark_uninitialized(&self, addr: u64, len: u64) -> Result<(), RangeError> {
        if len == 0 {
            return Ok(());
        }
        let (a, off) = self.range(addr, len, "marking memory uninitialised")?;
        if a.has_shadow() {
            // Only whole words: a partly covered word keeps its state.
            let first = off.div_ceil(4) as usize;
            let last = ((off + len) / 4) as usize;
            for w in first..last {
                a.wshadow[w].store(0, Relaxed);
                a.rshadow[w].store(0, Relaxed);
            }
        }
        Ok(())
    }

    /// Forget every access record (at the launch counter's wrap-around; see `check`).
    pub fn clear_launch_records(&self) {
        for a in self.map.read().unwrap().values() {
            for (w, r) in a.wshadow.iter().zip(a.rshadow.iter()) {
                if w.load(Relaxed) != 0 {
                    w.store(HOST_WRITE, Relaxed);
                }
                r.store(0, Relaxed);
            }
        }
    }
}

/// One block's shared memory and its shadow state.
pub struct SharedMem {
    pub words: Vec<u32>,
    /// Bytes the kernel may use (static + dynamic).
    pub size: u32,
    /// Per word: last write and first read in the current barrier interval (see `check`).
    pub wshadow: Vec<u64>,
    pub rshadow: Vec<u64>,
}

impl SharedMem {
    pub fn new(size: u32) -> SharedMem {
        let n = size.div_ceil(4) as usize;
        SharedMem {
            words: vec![0; n],
            size,
            wshadow: vec![0; n],
            rshadow: vec![0; n],
        }
    }
    /// Reuse for another block: contents undefined again (zeroed), shadow cleared.
    pub fn reset(&mut self) {
        self.words.iter_mut().for_each(|w| *w = 0);
        self.wshadow.iter_mut().for_each(|w| *w = 0);
        self.rshadow.iter_mut().for_each(|w| *w = 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocations_never_overlap_or_reuse_addresses() {
        let m = Memory::new(1 << 20, true);
        let a = m.alloc(10).unwrap();
        let b = m.alloc(10).unwrap();
        assert!(b >= a + 10 + GUARD);
        assert_eq!(a % 256, 0);
        m.free(a).unwrap();
        let c = m.alloc(10).unwrap();
        assert!(c > b);
        assert!(m.was_freed(a + 3));
        assert!(m.alloc(2 << 20).is_none());
    }

    #[test]
    fn copies_respect_exact_sizes() {
        let m = Memory::new(1 << 20, true);
        let a = m.alloc(6).unwrap();
        m.write(a, &[1, 2, 3, 4, 5, 6]).unwrap();
        let mut out = [0u8; 6];
        m.read(a, &mut out).unwrap();
        assert_eq!(out, [1, 2, 3, 4, 5, 6]);
        let e = m.write(a + 4, &[0, 0, 0]).unwrap_err();
        assert!(e.0.contains("past the end"), "{e:?}");
        m.memset(a + 1, 0xAB, 1, 2).unwrap();
        m.read(a, &mut out).unwrap();
        assert_eq!(out, [1, 0xAB, 0xAB, 4, 5, 6]);
        let s = m.snapshot();
        assert_eq!(s.find(a + 5), Some(0));
        assert_eq!(s.find(a - 1), None);
    }

    #[test]
    fn copies_carry_and_marks_clear_the_written_state() {
        let m = Memory::new(1 << 20, true);
        let (src, dst) = (m.alloc(16).unwrap(), m.alloc(16).unwrap());
        m.write(src, &[1; 8]).unwrap(); // words 0-1 written, 2-3 not
        m.write(dst, &[2; 16]).unwrap();
        m.copy(dst, src, 16).unwrap();
        let d = &m.snapshot().allocs[1];
        let written: Vec<bool> = (0..4).map(|w| d.wshadow[w].load(Relaxed) != 0).collect();
        assert_eq!(written, [true, true, false, false]);
        m.mark_uninitialized(dst, 8).unwrap();
        assert_eq!(d.wshadow[0].load(Relaxed), 0);
        assert!(m.mark_uninitialized(dst + 12, 8).is_err()); // past the end
    }
}
