//! Spec chapter "Time family": clocks, the shared time page and the one-shot timer.
//!
//! Reading the clock with `TIME_MONOTONIC` costs an exit. Registering a [`SharedTimePage`]
//! with `TIME_SET_PAGE` lets the guest read time without one: the host keeps a
//! [`TimePage`] current at its start, under a sequence lock, and the guest interpolates from
//! the TSC with [`TimePageReader`] (integer arithmetic only).
//!
//! # Memory ordering of the time page
//!
//! The host makes `sequence` odd, writes the other fields, then makes it even again. The
//! reader ([`TimePageReader::try_read`]) loads `sequence` (acquire), retries while it is odd,
//! reads the fields with volatile loads, issues an acquire fence (no later load may be
//! satisfied before the field loads) and loads `sequence` again: if it is unchanged, no
//! update overlapped the field loads and the copy is consistent. The host must order its
//! stores the same way (odd sequence, release fence, fields, release store of the even
//! sequence). On x86-64 these fences cost no instruction; they stop the compiler from
//! reordering.

use core::marker::PhantomData;
use core::mem::offset_of;
use core::sync::atomic::{fence, AtomicU32, Ordering};

use pvabi_abi::calls::Call;
use pvabi_abi::time::{StealTimePage, TimePage, TIME_PAGE_TSC_VALID};

use crate::error::{Error, Result};
use crate::shared::{gpa_of, RawPage};
use crate::transport::Transport;
use crate::Pvabi;

/// One nanosecond-per-second constant, for integer wall-clock arithmetic.
const NANOS_PER_SEC: u64 = 1_000_000_000;

/// TIME_WALLCLOCK's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WallClock {
    /// Seconds since the Unix epoch.
    pub seconds: u64,
    /// Nanoseconds, 0 to 999 999 999.
    pub nanoseconds: u32,
}

/// TIME_FREQUENCY's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Frequency {
    /// TSC frequency in Hz; 0 if the host does not know it.
    pub tsc_hz: u64,
    /// Resolution of the one-shot timer in nanoseconds.
    pub resolution_ns: u64,
}

impl<T: Transport> Pvabi<T> {
    /// `TIME_MONOTONIC`: nanoseconds since the VM started (never decreases).
    #[doc(alias = "TIME_MONOTONIC")]
    pub fn time_monotonic(&self) -> Result<u64> {
        // SAFETY: TIME_MONOTONIC takes no argument and only returns registers.
        let r = unsafe { self.call_raw(Call::TimeMonotonic, [0; 6]) }?;
        Ok(r[0])
    }

    /// `TIME_WALLCLOCK`: seconds and nanoseconds since the Unix epoch.
    #[doc(alias = "TIME_WALLCLOCK")]
    pub fn time_wallclock(&self) -> Result<WallClock> {
        // SAFETY: TIME_WALLCLOCK takes no argument and only returns registers.
        let r = unsafe { self.call_raw(Call::TimeWallclock, [0; 6]) }?;
        let nanoseconds = u32::try_from(r[1])
            .ok()
            .filter(|&n| u64::from(n) < NANOS_PER_SEC)
            .ok_or(Error::UnexpectedResult(r[1]))?;
        Ok(WallClock {
            seconds: r[0],
            nanoseconds,
        })
    }

    /// `TIME_FREQUENCY`: the TSC frequency and the timer resolution.
    #[doc(alias = "TIME_FREQUENCY")]
    pub fn time_frequency(&self) -> Result<Frequency> {
        // SAFETY: TIME_FREQUENCY takes no argument and only returns registers.
        let r = unsafe { self.call_raw(Call::TimeFrequency, [0; 6]) }?;
        Ok(Frequency {
            tsc_hz: r[0],
            resolution_ns: r[1],
        })
    }

    /// `TIME_SET_PAGE`: registers the 4 KiB-aligned page at guest-physical `gpa` as the shared
    /// time page. From then on the host writes a [`TimePage`] at its start. For a
    /// [`SharedTimePage`] under identity mapping, pass [`SharedTimePage::gpa`].
    ///
    /// # Safety
    /// `gpa` must be the guest-physical address of memory that the guest gives to the host
    /// for as long as it stays registered (until [`time_unset_page`](Self::time_unset_page)
    /// succeeds, or forever), and that the guest only reads with volatile or atomic loads,
    /// such as a `'static` [`SharedTimePage`].
    #[doc(alias = "TIME_SET_PAGE")]
    pub unsafe fn time_set_page(&self, gpa: u64) -> Result<()> {
        // SAFETY: the caller hands the page over (see above).
        unsafe { self.call_raw(Call::TimeSetPage, [gpa, 0, 0, 0, 0, 0]) }.map(drop)
    }

    /// `TIME_SET_PAGE` with address 0: unregisters the time page (the host stops writing it).
    #[doc(alias = "TIME_SET_PAGE")]
    pub fn time_unset_page(&self) -> Result<()> {
        // SAFETY: address 0 only ends the host's writes to the registered page.
        unsafe { self.call_raw(Call::TimeSetPage, [0; 6]) }.map(drop)
    }

    /// `TIME_SET_STEAL_PAGE` (since 1.1, feature STEAL_TIME): registers `gpa` as the calling
    /// vCPU's steal-time page; read it with [`SharedStealPage::read`].
    ///
    /// # Safety
    /// `gpa` must be a 4 KiB-aligned page the guest hands to the host: the host writes it
    /// until it is unregistered, so the guest must not use it for anything else.
    #[doc(alias = "TIME_SET_STEAL_PAGE")]
    pub unsafe fn time_set_steal_page(&self, gpa: u64) -> Result<()> {
        // SAFETY: the caller hands the page over (see above).
        unsafe { self.call_raw(Call::TimeSetStealPage, [gpa, 0, 0, 0, 0, 0]) }.map(drop)
    }

    /// `TIME_SET_STEAL_PAGE` with address 0: unregisters the calling vCPU's steal-time page.
    #[doc(alias = "TIME_SET_STEAL_PAGE")]
    pub fn time_unset_steal_page(&self) -> Result<()> {
        // SAFETY: address 0 only ends the host's writes to the registered page.
        unsafe { self.call_raw(Call::TimeSetStealPage, [0; 6]) }.map(drop)
    }

    /// `TIME_SET_TIMER`: arms the calling vCPU's one-shot timer for monotonic time
    /// `deadline_ns` (0 cancels). At expiry the host posts a TIMER event to this vCPU and
    /// wakes `VCPU_HALT`. Deferrable: see [`DeferredQueue::push_set_timer`].
    ///
    /// [`DeferredQueue::push_set_timer`]: crate::batch::DeferredQueue::push_set_timer
    #[doc(alias = "TIME_SET_TIMER")]
    pub fn time_set_timer(&self, deadline_ns: u64) -> Result<()> {
        // SAFETY: TIME_SET_TIMER only changes this vCPU's timer.
        unsafe { self.call_raw(Call::TimeSetTimer, [deadline_ns, 0, 0, 0, 0, 0]) }.map(drop)
    }

    /// `TIME_SET_TIMER` with deadline 0: cancels the one-shot timer.
    #[doc(alias = "TIME_SET_TIMER")]
    pub fn time_cancel_timer(&self) -> Result<()> {
        self.time_set_timer(0)
    }
}

/// The page to register with `TIME_SET_PAGE`: 4 KiB, 4 KiB-aligned, zeroed, owned by the
/// guest and written by the host once registered. Put it in a `static`:
///
/// ```
/// use pvabi_guest::time::SharedTimePage;
/// static TIME: SharedTimePage = SharedTimePage::new();
/// assert_eq!(TIME.gpa() % 4096, 0);
/// assert!(TIME.reader().read().now_ns(1234).is_none()); // not registered: TSC not valid
/// ```
#[repr(C, align(4096))]
pub struct SharedTimePage {
    page: RawPage,
}

impl SharedTimePage {
    /// A zeroed page.
    pub const fn new() -> Self {
        SharedTimePage {
            page: RawPage::new(),
        }
    }

    /// The page's guest-physical address under identity mapping (see [`gpa_of`]).
    pub fn gpa(&self) -> u64 {
        gpa_of(self)
    }

    /// A reader of the [`TimePage`] at the start of the page.
    pub fn reader(&self) -> TimePageReader<'_> {
        TimePageReader {
            page: self.page.ptr().cast_const(),
            _page: PhantomData,
        }
    }

    /// The page's first byte, for code that simulates the host (tests) or maps it elsewhere.
    pub const fn as_ptr(&self) -> *mut u8 {
        self.page.ptr()
    }
}

impl Default for SharedTimePage {
    fn default() -> Self {
        SharedTimePage::new()
    }
}

impl core::fmt::Debug for SharedTimePage {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SharedTimePage")
            .field("gpa", &self.gpa())
            .finish_non_exhaustive()
    }
}

/// Reads the shared time page with the sequence-lock protocol (see the module docs).
#[derive(Clone, Copy, Debug)]
pub struct TimePageReader<'a> {
    page: *const u8,
    _page: PhantomData<&'a SharedTimePage>,
}

// SAFETY: the reader only performs atomic and volatile loads of a page that outlives it (or,
// for `from_ptr`, that the creator vouched for); loads from several threads cannot race with
// each other.
unsafe impl Send for TimePageReader<'_> {}
// SAFETY: as above.
unsafe impl Sync for TimePageReader<'_> {}

impl TimePageReader<'_> {
    /// A reader of the time page at `page` (e.g. mapped at a virtual address that differs
    /// from its guest-physical one).
    ///
    /// # Safety
    /// `page` must be 8-aligned and valid for reads of a [`TimePage`] for the reader's
    /// lifetime, and the guest must not write it (only the host does).
    pub const unsafe fn from_ptr(page: *const TimePage) -> Self {
        TimePageReader {
            page: page.cast(),
            _page: PhantomData,
        }
    }

    fn sequence(&self) -> u32 {
        // SAFETY: `sequence` is the first field: in bounds and 4-aligned; the guest only
        // loads it atomically (see `RawPage::atomic_u32` for the host's side).
        let seq = unsafe { AtomicU32::from_ptr(self.page.cast_mut().cast::<u32>()) };
        seq.load(Ordering::Acquire)
    }

    fn fields(&self) -> TimePage {
        macro_rules! field {
            ($name:ident: $ty:ty) => {
                // SAFETY: the field lies inside the page at its natural alignment; a volatile
                // load because the host may be writing it (a torn value is discarded by the
                // sequence check).
                unsafe {
                    self.page
                        .add(offset_of!(TimePage, $name))
                        .cast::<$ty>()
                        .read_volatile()
                }
            };
        }
        TimePage {
            sequence: 0,
            flags: field!(flags: u32),
            monotonic_ns: field!(monotonic_ns: u64),
            tsc_timestamp: field!(tsc_timestamp: u64),
            wallclock_sec: field!(wallclock_sec: u64),
            wallclock_nsec: field!(wallclock_nsec: u32),
            tsc_shift: field!(tsc_shift: i32),
            tsc_mul: field!(tsc_mul: u32),
            reserved0: field!(reserved0: u32),
            reserved: [0; 2],
        }
    }

    /// A consistent copy of the page, or `None` if `max_attempts` reads all overlapped a host
    /// update (or saw it in progress).
    pub fn try_read(&self, max_attempts: u32) -> Option<TimeSnapshot> {
        seqlock_read(|| self.sequence(), || self.fields(), Some(max_attempts))
            .map(|(sequence, page)| TimeSnapshot(TimePage { sequence, ..page }))
    }

    /// A consistent copy of the page; spins while the host updates it.
    pub fn read(&self) -> TimeSnapshot {
        // Without a bound the loop only ends with a copy, so `None` cannot happen (and the
        // fallback avoids a panic path, which would pull in `core::fmt`).
        let (sequence, page) = seqlock_read(|| self.sequence(), || self.fields(), None)
            .unwrap_or_else(|| crate::shared::hang());
        TimeSnapshot(TimePage { sequence, ..page })
    }

    /// Monotonic nanoseconds at TSC value `tsc`, interpolated from a consistent copy;
    /// `None` when the page's TSC fields are not valid (use `TIME_MONOTONIC` then).
    pub fn now_ns(&self, tsc: u64) -> Option<u64> {
        self.read().now_ns(tsc)
    }

    /// Monotonic nanoseconds now: reads the TSC inside the sequence-locked section, after the
    /// field loads ([`rdtsc_ordered`]), so the TSC value and the page's parameters belong
    /// together and the TSC is not read before the host's `tsc_timestamp` (PVABI-TIME-031). `None` when the TSC fields are
    /// not valid.
    #[cfg(target_arch = "x86_64")]
    pub fn now(&self) -> Option<u64> {
        let (_, (page, tsc)) = seqlock_read(
            || self.sequence(),
            || (self.fields(), rdtsc_ordered()),
            None,
        )?;
        TimeSnapshot(page).now_ns(tsc)
    }
}

/// A page-aligned steal-time page the guest registers with
/// [`Pvabi::time_set_steal_page`] (since 1.1).
#[repr(C, align(4096))]
pub struct SharedStealPage {
    page: RawPage,
}

impl Default for SharedStealPage {
    fn default() -> Self {
        Self::new()
    }
}

impl SharedStealPage {
    /// A zeroed page.
    pub const fn new() -> Self {
        SharedStealPage {
            page: RawPage::new(),
        }
    }

    /// The page's guest-physical address under identity mapping (see [`gpa_of`]).
    pub fn gpa(&self) -> u64 {
        gpa_of(self)
    }

    /// A consistent copy of the page (the sequence-lock loop of the time page).
    pub fn read(&self) -> StealTimePage {
        let page = self.page.ptr().cast_const();
        macro_rules! field {
            ($name:ident) => {
                // SAFETY: the field lies inside the page at its natural alignment; volatile
                // because the host may be writing it (a torn value fails the sequence check).
                unsafe {
                    page.add(offset_of!(StealTimePage, $name))
                        .cast::<u64>()
                        .read_volatile()
                }
            };
        }
        let (sequence, (steal_ns, preemptions)) = seqlock_read(
            || self.page.atomic_u32(0).load(Ordering::Acquire),
            || (field!(steal_ns), field!(preemptions)),
            None,
        )
        .unwrap_or_else(|| crate::shared::hang());
        StealTimePage {
            sequence,
            steal_ns,
            preemptions,
            ..StealTimePage::default()
        }
    }
}

/// The sequence-lock read loop: `sequence` loads the sequence word (acquire), `body` reads
/// everything it protects. Returns the even sequence value and the body read under it.
pub(crate) fn seqlock_read<B>(
    mut sequence: impl FnMut() -> u32,
    mut body: impl FnMut() -> B,
    max_attempts: Option<u32>,
) -> Option<(u32, B)> {
    let mut attempts = 0u32;
    loop {
        if max_attempts.is_some_and(|max| attempts >= max) {
            return None;
        }
        attempts = attempts.saturating_add(1);
        let before = sequence();
        if before & 1 == 0 {
            let value = body();
            // The body's loads complete before the second load of the sequence.
            fence(Ordering::Acquire);
            if sequence() == before {
                return Some((before, value));
            }
        }
        core::hint::spin_loop();
    }
}

/// A consistent copy of the time page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeSnapshot(pub TimePage);

impl TimeSnapshot {
    /// Whether the TSC fields may be used to interpolate (`TIME_PAGE_TSC_VALID`).
    pub const fn tsc_valid(&self) -> bool {
        self.0.flags & TIME_PAGE_TSC_VALID != 0
    }

    /// Nanoseconds elapsed since the page's `tsc_timestamp` at TSC value `tsc`, by the spec's
    /// formula (PVABI-TIME-015): the delta `tsc - tsc_timestamp` in wrapping 64-bit arithmetic,
    /// shifted in 64 bits by `tsc_shift` (a negative shift shifting right), then multiplied by
    /// `tsc_mul` in 128 bits and shifted right by 32. The host keeps `tsc_shift` within -63..=63
    /// and the shifted delta within 64 bits (PVABI-TIME-030/031); a shift beyond that range is
    /// clamped to 63 rather than trusted.
    pub const fn elapsed_ns(&self, tsc: u64) -> u64 {
        let delta = tsc.wrapping_sub(self.0.tsc_timestamp);
        let shift = self.0.tsc_shift;
        let scaled = if shift >= 0 {
            let s = if shift > 63 { 63 } else { shift as u32 };
            delta << s
        } else {
            let s = if shift < -63 {
                63
            } else {
                shift.unsigned_abs()
            };
            delta >> s
        };
        ((scaled as u128 * self.0.tsc_mul as u128) >> 32) as u64
    }

    /// Monotonic nanoseconds at TSC value `tsc`; `None` unless [`tsc_valid`](Self::tsc_valid).
    pub const fn now_ns(&self, tsc: u64) -> Option<u64> {
        if !self.tsc_valid() {
            return None;
        }
        Some(self.0.monotonic_ns.wrapping_add(self.elapsed_ns(tsc)))
    }

    /// Wall-clock time at TSC value `tsc`; `None` unless [`tsc_valid`](Self::tsc_valid).
    pub const fn wallclock_at(&self, tsc: u64) -> Option<WallClock> {
        if !self.tsc_valid() {
            return None;
        }
        let nanos = self.0.wallclock_nsec as u64 + self.elapsed_ns(tsc);
        Some(WallClock {
            seconds: self.0.wallclock_sec.wrapping_add(nanos / NANOS_PER_SEC),
            nanoseconds: (nanos % NANOS_PER_SEC) as u32,
        })
    }
}

/// Reads the time-stamp counter after every earlier load has completed (`lfence; rdtsc`, the
/// spec's `rdtsc_ordered`): the counter value is not taken ahead of the time page's fields.
#[cfg(target_arch = "x86_64")]
#[inline]
pub fn rdtsc_ordered() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: `lfence` only orders loads; `rdtsc` only writes eax and edx (see `rdtsc`). No
    // memory or stack access; flags untouched.
    unsafe {
        core::arch::asm!("lfence", "rdtsc", out("eax") lo, out("edx") hi, options(nostack, preserves_flags));
    }
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Reads the time-stamp counter (`rdtsc`; not serialising).
#[cfg(target_arch = "x86_64")]
#[inline]
pub fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: `rdtsc` only writes eax and edx (allowed at CPL3 unless CR4.TSD is set, which
    // would fault, not corrupt anything). No memory or stack access; flags untouched.
    unsafe {
        core::arch::asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags));
    }
    (u64::from(hi) << 32) | u64::from(lo)
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::cell::Cell;
    use std::vec;
    use std::vec::Vec;

    #[test]
    fn seqlock_retries_odd_and_changed_sequences() {
        // Sequence loads, in order: odd (host mid-update) -> retry; 4 then 6 (an update
        // overlapped the body) -> retry; 6 then 6 -> consistent.
        let script: Vec<u32> = vec![3, 4, 6, 6, 6];
        let next = Cell::new(0usize);
        let bodies = Cell::new(0u32);
        let got = seqlock_read(
            || {
                let i = next.get();
                next.set(i + 1);
                script[i]
            },
            || {
                bodies.set(bodies.get() + 1);
                bodies.get()
            },
            None,
        );
        assert_eq!(got, Some((6, 2)), "second body read, under sequence 6");
        assert_eq!(next.get(), 5, "every scripted load used");
        assert_eq!(bodies.get(), 2, "no body read while the sequence was odd");
    }

    #[test]
    fn seqlock_gives_up_after_max_attempts() {
        let got = seqlock_read(|| 7, || (), Some(10));
        assert_eq!(got, None);
    }

    /// The TSC delta wraps and the product keeps 96 bits (PVABI-TIME-015).
    #[test]
    fn interpolation_is_integer_and_exact() {
        // 1 GHz TSC: one tick = 1 ns = 2^32 / 2^32 -> tsc_mul = 2^31 with shift 1.
        let snap = TimeSnapshot(TimePage {
            flags: TIME_PAGE_TSC_VALID,
            monotonic_ns: 1_000,
            tsc_timestamp: 10_000,
            wallclock_sec: 100,
            wallclock_nsec: 999_999_000,
            tsc_shift: 1,
            tsc_mul: 1 << 31,
            ..TimePage::default()
        });
        assert_eq!(snap.now_ns(10_000), Some(1_000));
        assert_eq!(snap.now_ns(12_500), Some(3_500));
        // The delta wraps (PVABI-TIME-015): a TSC that passed 2^64 after the timestamp.
        let wrapped = TimeSnapshot(TimePage {
            tsc_timestamp: u64::MAX - 999,
            ..snap.0
        });
        assert_eq!(wrapped.now_ns(1_500), Some(3_500));
        // The 96-bit product: a delta of 2^40 ticks times tsc_mul 2^31 with shift 1 would
        // overflow 64 bits.
        assert_eq!(snap.now_ns(10_000 + (1 << 40)), Some(1_000 + (1 << 40)));
        assert_eq!(
            snap.wallclock_at(12_000),
            Some(WallClock {
                seconds: 101,
                nanoseconds: 1_000
            })
        );
        // 3 GHz TSC: shift -1 and tsc_mul = 2^33 / 3 -> 3000 ticks ~ 1000 ns (rounded down).
        let snap3 = TimeSnapshot(TimePage {
            tsc_shift: -1,
            tsc_mul: ((1u64 << 33) / 3) as u32,
            ..snap.0
        });
        assert_eq!(snap3.now_ns(13_000), Some(1_999));
        let invalid = TimeSnapshot(TimePage { flags: 0, ..snap.0 });
        assert_eq!(invalid.now_ns(12_500), None);
    }

    /// A snapshot without `TIME_PAGE_TSC_VALID` gives no time from its TSC fields, whatever
    /// they hold (PVABI-TIME-035): the reader returns `None` and the caller falls back to
    /// TIME_MONOTONIC or `monotonic_ns`.
    #[test]
    fn tsc_fields_are_not_used_without_tsc_valid() {
        let page = TimePage {
            flags: 0,
            monotonic_ns: 5_000,
            tsc_timestamp: 1,
            wallclock_sec: 7,
            wallclock_nsec: 0,
            tsc_shift: 3,
            tsc_mul: u32::MAX,
            ..TimePage::default()
        };
        for flags in [0, !TIME_PAGE_TSC_VALID] {
            let snap = TimeSnapshot(TimePage { flags, ..page });
            assert!(!snap.tsc_valid());
            for tsc in [0, 1, 1 << 40, u64::MAX] {
                assert_eq!(snap.now_ns(tsc), None, "flags {flags:#x}, tsc {tsc}");
                assert_eq!(snap.wallclock_at(tsc), None, "flags {flags:#x}, tsc {tsc}");
            }
        }
        let valid = TimeSnapshot(TimePage {
            flags: TIME_PAGE_TSC_VALID,
            ..page
        });
        assert!(valid.now_ns(1 << 20).is_some_and(|ns| ns > 5_000));
    }
}
