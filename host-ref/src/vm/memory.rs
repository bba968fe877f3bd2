//! Guest RAM and the guest image: allocation, ELF checks and loading.
//!
//! Guest RAM is one anonymous mapping from guest-physical address 0, owned by a
//! `vm_memory::GuestMemoryMmap` and accessed only through it (volatile, bounds-checked
//! `Bytes` accessors). The image is loaded by `linux_loader`'s ELF loader; this module
//! only checks the headers first so that it can say precisely what is wrong (not an
//! ELF, not x86-64, not an executable, too big for RAM, overlapping the boot area).

use std::io::Cursor;

use linux_loader::loader::{Elf, KernelLoader};
use vm_memory::{GuestAddress, GuestMemoryMmap};

use super::{VmError, IMAGE_MIN_ADDR, MIB};

/// Allocates `bytes` of zeroed guest RAM at guest-physical address 0.
pub(super) fn create(bytes: u64) -> Result<GuestMemoryMmap, VmError> {
    let len = usize::try_from(bytes).map_err(|_| {
        VmError::Config(format!(
            "--mem {bytes} does not fit this host's address space"
        ))
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

fn read_u16(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}

fn read_u32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().expect("4 bytes"))
}

fn read_u64(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().expect("8 bytes"))
}

const EHDR_SIZE: usize = 64;
const PHDR_SIZE: usize = 56;
const PT_LOAD: u32 = 1;
const ET_EXEC: u16 = 2;
const EM_X86_64: u16 = 62;

/// Checks the ELF and program headers of `image` (all reads bounds-checked).
pub(super) fn inspect(image: &[u8]) -> Result<ImageInfo, VmError> {
    let bad = |what: String| Err(VmError::BadElf(what));
    if image.len() < EHDR_SIZE {
        return bad(format!(
            "it is {} bytes long, shorter than an ELF header",
            image.len()
        ));
    }
    if &image[..4] != b"\x7fELF" {
        return bad("it does not start with the ELF magic \\x7fELF".into());
    }
    if image[4] != 2 {
        return bad("it is not a 64-bit ELF (EI_CLASS is not ELFCLASS64)".into());
    }
    if image[5] != 1 {
        return bad("it is not little-endian (EI_DATA is not ELFDATA2LSB)".into());
    }
    let e_type = read_u16(image, 16);
    if e_type != ET_EXEC {
        return bad(format!(
            "its type is {e_type}, not ET_EXEC (2): link it with -static -no-pie"
        ));
    }
    let machine = read_u16(image, 18);
    if machine != EM_X86_64 {
        return bad(format!("its machine is {machine}, not x86-64 (62)"));
    }
    let entry = read_u64(image, 24);
    let phoff = read_u64(image, 32);
    let phentsize = read_u16(image, 54);
    let phnum = read_u16(image, 56);
    if usize::from(phentsize) != PHDR_SIZE {
        return bad(format!(
            "its program header size is {phentsize}, not {PHDR_SIZE}"
        ));
    }
    let table_end = usize::try_from(phoff)
        .ok()
        .and_then(|off| off.checked_add(usize::from(phnum) * PHDR_SIZE));
    let Some(table_end) = table_end.filter(|&end| end <= image.len()) else {
        return bad("its program header table lies outside the file".into());
    };
    let phoff = table_end - usize::from(phnum) * PHDR_SIZE;

    let mut end = 0u64;
    let mut entry_in_segment = false;
    let mut loads = 0;
    for i in 0..usize::from(phnum) {
        let ph = &image[phoff + i * PHDR_SIZE..phoff + (i + 1) * PHDR_SIZE];
        if read_u32(ph, 0) != PT_LOAD {
            continue;
        }
        loads += 1;
        let offset = read_u64(ph, 8);
        let paddr = read_u64(ph, 24);
        let filesz = read_u64(ph, 32);
        let memsz = read_u64(ph, 40);
        if offset
            .checked_add(filesz)
            .is_none_or(|e| e > image.len() as u64)
        {
            return bad(format!("segment {i} extends beyond the end of the file"));
        }
        if filesz > memsz {
            return bad(format!("segment {i} has p_filesz > p_memsz"));
        }
        if paddr < IMAGE_MIN_ADDR {
            return bad(format!(
                "segment {i} loads at {paddr:#x}, inside the host's boot area below \
                 {IMAGE_MIN_ADDR:#x}"
            ));
        }
        let Some(seg_end) = paddr.checked_add(memsz) else {
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
