//! Guest RAM and the guest image: allocation, ELF checks and loading.
//!
//! Guest RAM is one anonymous mapping from guest-physical address 0, owned by a
//! `vm_memory::GuestMemoryMmap` and accessed only through it (volatile, bounds-checked
//! `Bytes` accessors). The image is loaded by `linux_loader`'s ELF loader; this module
//! first checks the headers (with `linux_loader`'s ELF types) so that it can say precisely
//! what is wrong (not an ELF, not x86-64, not an executable, too big for RAM, overlapping
//! the boot area).

use std::io::Cursor;
use std::mem::size_of;

use linux_loader::elf::{self, Elf64_Ehdr, Elf64_Phdr};
use linux_loader::loader::{Elf, KernelLoader};
use vm_memory::{ByteValued, GuestAddress, GuestMemoryMmap};

use super::{VmError, GIB, IMAGE_MIN_ADDR, MAX_MEM_BYTES, MIB};

/// Allocates `bytes` of zeroed guest RAM at guest-physical address 0.
pub(super) fn create(bytes: u64) -> Result<GuestMemoryMmap, VmError> {
    let len = usize::try_from(bytes).map_err(|_| VmError::MemorySize {
        bytes,
        max_gib: MAX_MEM_BYTES / GIB,
    })?;
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), len)]).map_err(|source| VmError::Memory {
        mib: bytes.div_ceil(MIB),
        source,
    })
}

/// What the header checks learnt about an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ImageInfo {
    /// The entry point.
    pub entry: u64,
    /// One past the highest byte any PT_LOAD segment occupies in memory (incl. .bss).
    pub end: u64,
}

/// Reads a header `T` at `offset` of `image` (a copy: the file need not be aligned).
fn header<T: ByteValued + Default>(image: &[u8], offset: usize) -> Option<T> {
    let bytes = image.get(offset..offset.checked_add(size_of::<T>())?)?;
    let mut value = T::default();
    value.as_mut_slice().copy_from_slice(bytes);
    Some(value)
}

/// Checks the ELF and program headers of `image` (all reads bounds-checked).
pub(super) fn inspect(image: &[u8]) -> Result<ImageInfo, VmError> {
    let bad = |what: String| Err(VmError::BadElf(what));
    let Some(ehdr) = header::<Elf64_Ehdr>(image, 0) else {
        return bad(format!(
            "it is {} bytes long, shorter than an ELF header",
            image.len()
        ));
    };
    if ehdr.e_ident[..elf::SELFMAG] != elf::ELFMAG[..] {
        return bad("it does not start with the ELF magic \\x7fELF".into());
    }
    if ehdr.e_ident[elf::EI_CLASS] != elf::ELFCLASS64 {
        return bad("it is not a 64-bit ELF (EI_CLASS is not ELFCLASS64)".into());
    }
    if ehdr.e_ident[elf::EI_DATA] != elf::ELFDATA2LSB {
        return bad("it is not little-endian (EI_DATA is not ELFDATA2LSB)".into());
    }
    if ehdr.e_type != elf::ET_EXEC {
        return bad(format!(
            "its type is {}, not ET_EXEC (2): link it with -static -no-pie",
            ehdr.e_type
        ));
    }
    if ehdr.e_machine != elf::EM_X86_64 {
        return bad(format!(
            "its machine is {}, not x86-64 (62)",
            ehdr.e_machine
        ));
    }
    let entry = ehdr.e_entry;
    let phdr_size = size_of::<Elf64_Phdr>();
    if usize::from(ehdr.e_phentsize) != phdr_size {
        return bad(format!(
            "its program header size is {}, not {phdr_size}",
            ehdr.e_phentsize
        ));
    }
    let phnum = usize::from(ehdr.e_phnum);
    let phoff = usize::try_from(ehdr.e_phoff).ok().filter(|off| {
        off.checked_add(phnum * phdr_size)
            .is_some_and(|end| end <= image.len())
    });
    let Some(phoff) = phoff else {
        return bad("its program header table lies outside the file".into());
    };

    let mut end = 0u64;
    let mut entry_in_segment = false;
    let mut loads = 0;
    for i in 0..phnum {
        let Some(ph) = header::<Elf64_Phdr>(image, phoff + i * phdr_size) else {
            return bad("its program header table lies outside the file".into());
        };
        if ph.p_type != elf::PT_LOAD {
            continue;
        }
        loads += 1;
        if ph
            .p_offset
            .checked_add(ph.p_filesz)
            .is_none_or(|e| e > image.len() as u64)
        {
            return bad(format!("segment {i} extends beyond the end of the file"));
        }
        if ph.p_filesz > ph.p_memsz {
            return bad(format!("segment {i} has p_filesz > p_memsz"));
        }
        let paddr = ph.p_paddr;
        if paddr < IMAGE_MIN_ADDR {
            return bad(format!(
                "segment {i} loads at {paddr:#x}, inside the host's boot area below \
                 {IMAGE_MIN_ADDR:#x}"
            ));
        }
        let Some(seg_end) = paddr.checked_add(ph.p_memsz) else {
            return bad(format!("segment {i}'s address range overflows"));
        };
        end = end.max(seg_end);
        if (paddr..seg_end).contains(&entry) {
            entry_in_segment = true;
        }
    }
    if loads == 0 {
        return bad("it has no PT_LOAD segment".into());
    }
    if !entry_in_segment {
        return bad(format!(
            "its entry point {entry:#x} is not inside any loaded segment"
        ));
    }
    Ok(ImageInfo { entry, end })
}

/// Checks `image` and that it fits into `mem_bytes` of RAM (without touching KVM).
pub(super) fn check(image: &[u8], mem_bytes: u64) -> Result<ImageInfo, VmError> {
    let info = inspect(image)?;
    if info.end > mem_bytes {
        return Err(VmError::ImageTooLarge {
            need_mib: info.end.div_ceil(MIB),
            have_mib: mem_bytes / MIB,
        });
    }
    Ok(info)
}

/// Copies guest RAM from `previous` into the fresh `memory` (both `mem_bytes` long) for a
/// reset, leaving the range `image` is loaded into (from `IMAGE_MIN_ADDR` to the end of its
/// highest segment, bss included) zero, for [`load`] to fill again.
pub(super) fn carry_over(
    previous: &GuestMemoryMmap,
    memory: &GuestMemoryMmap,
    mem_bytes: u64,
    image: &[u8],
) -> Result<(), VmError> {
    use vm_memory::Bytes;
    let info = check(image, mem_bytes)?;
    let copy_error = |e: vm_memory::GuestMemoryError| VmError::GuestWrite {
        what: "guest RAM carried over a reset",
        detail: e.to_string(),
    };
    let mut chunk = vec![0u8; MIB as usize];
    let mut at = 0;
    while at < mem_bytes {
        let len = (mem_bytes - at).min(MIB) as usize;
        previous
            .read_slice(&mut chunk[..len], GuestAddress(at))
            .map_err(copy_error)?;
        // The image's range stays as `create` left it: zero.
        let (lo, hi) = (IMAGE_MIN_ADDR.max(at), info.end.min(at + len as u64));
        if lo < hi {
            chunk[(lo - at) as usize..(hi - at) as usize].fill(0);
        }
        memory
            .write_slice(&chunk[..len], GuestAddress(at))
            .map_err(copy_error)?;
        at += len as u64;
    }
    Ok(())
}

/// Checks `image`, checks that it fits `memory`, and loads it. Returns the entry point.
pub(super) fn load(memory: &GuestMemoryMmap, mem_bytes: u64, image: &[u8]) -> Result<u64, VmError> {
    check(image, mem_bytes)?;
    let result = Elf::load(
        memory,
        None,
        &mut Cursor::new(image),
        Some(GuestAddress(IMAGE_MIN_ADDR)),
    )
    .map_err(VmError::Load)?;
    Ok(result.kernel_load.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_garbage() {
        assert!(matches!(inspect(b"hello"), Err(VmError::BadElf(_))));
        assert!(matches!(inspect(&[0u8; 200]), Err(VmError::BadElf(_))));
        let mut fake = vec![0u8; 200];
        fake[..4].copy_from_slice(b"\x7fELF");
        fake[4] = 1; // 32-bit
        let err = inspect(&fake).unwrap_err().to_string();
        assert!(err.contains("64-bit"), "{err}");
    }
}
