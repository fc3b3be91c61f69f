//! Process hardening and wiping of keyrun's own copies of secret values.
//!
//! Wrapping the final value in a zeroizing type is not enough, because the
//! standard library, parsers and network clients copy what they read. So
//! keyrun zeroes every heap block as it is freed ([`ZeroingAllocator`]),
//! wipes the original environment block in place ([`wipe_environ_values`]),
//! and scrubs the unused part of the main stack before it waits on the child
//! ([`scrub_stack`]).

use std::alloc::{GlobalAlloc, Layout, System};
use std::ffi::{c_char, CStr, OsStr};
use std::os::unix::ffi::OsStrExt;

/// A global allocator that zeroes each block before it returns the block to
/// the system allocator, so a freed buffer that held a secret value (an HTTP
/// body, a JSON string, a `String` the standard library made) leaves no copy.
pub struct ZeroingAllocator;

unsafe impl GlobalAlloc for ZeroingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        System.alloc_zeroed(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        std::ptr::write_bytes(ptr, 0, layout.size());
        // `free` is a known function to the optimiser, which may drop stores
        // that precede it; `black_box` makes the zeroed bytes observable.
        std::hint::black_box(ptr);
        System.dealloc(ptr, layout);
    }

    // The default `realloc` allocates, copies and calls `dealloc`, so the old
    // block is zeroed too. The system `realloc` would free it unwiped.
}

/// Makes the process non-dumpable and disables core dumps, so a same-user
/// process can read neither `/proc/<pid>/environ` nor `/proc/<pid>/mem`, and
/// a crash writes no core file holding a value.
pub fn protect_process() {
    let zero = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: setrlimit reads a valid rlimit struct.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_CORE, &zero) };
    if rc != 0 {
        tracing::debug!(
            "setrlimit(RLIMIT_CORE, 0) failed: {}",
            std::io::Error::last_os_error()
        );
    }

    #[cfg(target_os = "linux")]
    {
        // SAFETY: PR_SET_DUMPABLE takes plain integer arguments.
        let rc = unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
        if rc != 0 {
            tracing::debug!(
                "prctl(PR_SET_DUMPABLE, 0) failed: {}",
                std::io::Error::last_os_error()
            );
        }
    }

    #[cfg(target_os = "macos")]
    {
        // PT_DENY_ATTACH (31) stops debuggers and task_for_pid readers.
        // SAFETY: ptrace with PT_DENY_ATTACH takes no pointer arguments.
        unsafe {
            libc::ptrace(31, 0, std::ptr::null_mut(), 0);
        }
    }
}

extern "C" {
    static mut environ: *const *const c_char;
}

/// Overwrites with NUL bytes the values of the named variables in the
/// process's environment block.
///
/// `unsetenv` only unlinks an entry from the `environ` array: the original
/// `NAME=value` string stays in memory, and `/proc/<pid>/environ` still shows
/// it. Wiping the bytes in place removes both. Call this only while no other
/// thread reads the environment.
pub fn wipe_environ_values<'a>(names: impl IntoIterator<Item = &'a OsStr>) {
    let names: Vec<&OsStr> = names.into_iter().collect();
    if names.is_empty() {
        return;
    }

    // SAFETY: `environ` is a NULL-terminated array of NUL-terminated strings
    // that the C runtime set up; keyrun is single-threaded here and does not
    // call setenv, so the array is not reallocated while it is walked.
    unsafe {
        let mut entry = environ;
        if entry.is_null() {
            return;
        }
        while !(*entry).is_null() {
            let text = *entry as *mut u8;
            let bytes = CStr::from_ptr(*entry).to_bytes();
            if let Some(eq) = bytes.iter().position(|&b| b == b'=') {
                let name = OsStr::from_bytes(&bytes[..eq]);
                if names.contains(&name) {
                    let value_len = bytes.len() - eq - 1;
                    let value = text.add(eq + 1);
                    for i in 0..value_len {
                        std::ptr::write_volatile(value.add(i), 0);
                    }
                }
            }
            entry = entry.add(1);
        }
    }
}

/// Bytes of the main stack below the current frame that [`scrub_stack`]
/// examines. Resolution runs a few frames deep on this stack (TLS and JSON
/// parsing included), far less than this.
const STACK_SCRUB_BYTES: usize = 512 * 1024;

/// The stack frame of one level of [`scrub_frames`].
const SCRUB_FRAME_BYTES: usize = 16 * 1024;

/// Overwrites the unused stack below the caller, where earlier, deeper calls
/// (reads, parsers, formatting) left copies of the values they handled.
///
/// Only the part that earlier calls used can hold a copy: the kernel maps a
/// stack page when it is first touched. So keyrun queries `mincore` for the
/// pages below the current frame that are resident and scrubs down to the
/// deepest one. Touching all of [`STACK_SCRUB_BYTES`] would map each page
/// first, which added about 0.4 ms to each `keyrun -- true` (hyperfine on a
/// 2-core VM).
#[inline(never)]
pub fn scrub_stack() {
    let marker = 0u8;
    let top = std::hint::black_box(&marker) as *const u8 as usize;
    let depth = used_stack_below(top).unwrap_or(STACK_SCRUB_BYTES);
    // One frame more than the depth, because the first frame starts a
    // little below `top`.
    scrub_frames(depth.div_ceil(SCRUB_FRAME_BYTES) + 1);
}

/// Zeroes `levels` consecutive stack frames of [`SCRUB_FRAME_BYTES`] each.
#[inline(never)]
fn scrub_frames(levels: usize) {
    let mut area = [0u8; SCRUB_FRAME_BYTES];
    // SAFETY: `area` is a local array of exactly this size.
    unsafe { std::ptr::write_bytes(area.as_mut_ptr(), 0, area.len()) };
    std::hint::black_box(&mut area);
    if levels > 1 {
        scrub_frames(levels - 1);
    }
    // Keeps this frame alive across the call, so the next level lies below
    // it rather than reusing it as a tail call would.
    std::hint::black_box(&area);
}

/// Returns how many bytes below `top` (at most [`STACK_SCRUB_BYTES`]) reach
/// down to the deepest resident page of the stack, or `None` when `mincore`
/// cannot tell.
fn used_stack_below(top: usize) -> Option<usize> {
    // SAFETY: sysconf takes no pointers.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).ok()?;
    let high = top & !(page - 1);
    let low = high.saturating_sub(STACK_SCRUB_BYTES);
    let pages = (high - low) / page;

    // The stack mapping ends somewhere below `high`, and `mincore` fails
    // with ENOMEM on a range that reaches below it. Bisect for the lowest
    // page from which the range up to `high` is mapped.
    let mut residency = vec![0u8; pages];
    let query = |first: usize, residency: &mut [u8]| {
        let start = low + first * page;
        // SAFETY: mincore writes one byte per page of the range into
        // `residency`, which has room for exactly that many.
        unsafe {
            libc::mincore(
                start as *mut libc::c_void,
                high - start,
                residency.as_mut_ptr().cast(),
            ) == 0
        }
    };
    let (mut below, mut mapped) = (0, pages);
    while below < mapped {
        let middle = below + (mapped - below) / 2;
        if query(middle, &mut residency[middle..]) {
            mapped = middle;
        } else {
            below = middle + 1;
        }
    }
    if mapped < pages && !query(mapped, &mut residency[mapped..]) {
        return None;
    }
    match (mapped..pages).find(|&i| residency[i] & 1 != 0) {
        Some(deepest) => Some(top - (low + deepest * page)),
        // Nothing below the current page was ever touched.
        None => Some(top - high),
    }
}
