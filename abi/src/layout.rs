//! Layout descriptions of every ABI structure, with compile-time assertions.
//!
//! Each structure is written as a plain `#[repr(C)]` Rust struct (so cbindgen sees it) and
//! described once more here with the literal size, alignment and field offsets the spec
//! promises. The [`abi_layout!`](crate::abi_layout) macro asserts every number at compile time,
//! checks each field's type, and checks that the fields cover the structure with no gap, so a
//! description cannot drift from the struct. The spec tables, the C header's static assertions
//! and the version snapshots are generated from [`STRUCTS`].

/// One field of an ABI structure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FieldLayout {
    /// The field's name (the same in Rust and C).
    pub name: &'static str,
    /// Offset in bytes from the start of the structure.
    pub offset: usize,
    /// Size in bytes.
    pub size: usize,
    /// The Rust type, as written in the structure.
    pub ty: &'static str,
}

/// The layout of one ABI structure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StructLayout {
    /// The Rust name.
    pub name: &'static str,
    /// The C name (`pvabi_` + snake case).
    pub c_name: &'static str,
    /// Size in bytes.
    pub size: usize,
    /// Alignment in bytes.
    pub align: usize,
    /// Fields in offset order.
    pub fields: &'static [FieldLayout],
}

/// Describes an ABI structure and asserts its layout at compile time.
///
/// `abi_layout!(Type as "c_name", size N, align A { field: Ty @ OFFSET, ... })` defines
/// `Type::ABI_LAYOUT` and fails to compile if a size, alignment, offset or type is wrong, or if the
/// listed fields do not tile the structure exactly.
#[macro_export]
macro_rules! abi_layout {
    ($ty:ident as $cname:literal, size $size:literal, align $align:literal {
        $([$off:literal] $field:ident : $fty:ty),* $(,)?
    }) => {
        impl $ty {
            /// The layout of this structure, as the spec states it.
            pub const ABI_LAYOUT: $crate::layout::StructLayout = $crate::layout::StructLayout {
                name: stringify!($ty),
                c_name: $cname,
                size: $size,
                align: $align,
                fields: &[$($crate::layout::FieldLayout {
                    name: stringify!($field),
                    offset: $off,
                    size: ::core::mem::size_of::<$fty>(),
                    ty: stringify!($fty),
                }),*],
            };
        }
        const _: () = {
            assert!(::core::mem::size_of::<$ty>() == $size, "size");
            assert!(::core::mem::align_of::<$ty>() == $align, "align");
            $(assert!(::core::mem::offset_of!($ty, $field) == $off, stringify!($field));)*
            // The fields tile the structure: each starts where the previous ended.
            let fields = $ty::ABI_LAYOUT.fields;
            let mut end = 0;
            let mut i = 0;
            while i < fields.len() {
                assert!(fields[i].offset == end, "gap or overlap before a field");
                end += fields[i].size;
                i += 1;
            }
            assert!(end == $size, "fields do not cover the structure");
        };
        const _: fn(&$ty) = |v| { $(let _: &$fty = &v.$field;)* };
    };
}

/// Every ABI structure, in the order of the spec's chapters.
pub const STRUCTS: &[&StructLayout] = &[
    &crate::time::TimePage::ABI_LAYOUT,
    &crate::time::StealTimePage::ABI_LAYOUT,
    &crate::events::EventQueueHeader::ABI_LAYOUT,
    &crate::events::Event::ABI_LAYOUT,
    &crate::vcpu::VcpuStartState::ABI_LAYOUT,
    &crate::batch::MulticallEntry::ABI_LAYOUT,
    &crate::batch::MulticallPage::ABI_LAYOUT,
    &crate::batch::DeferredQueueHeader::ABI_LAYOUT,
    &crate::batch::DeferredEntry::ABI_LAYOUT,
    &crate::batch::RingSetup::ABI_LAYOUT,
    &crate::batch::RingHeader::ABI_LAYOUT,
    &crate::batch::SubmissionEntry::ABI_LAYOUT,
    &crate::batch::CompletionEntry::ABI_LAYOUT,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_c_names_prefixed() {
        for (i, a) in STRUCTS.iter().enumerate() {
            assert!(a.c_name.starts_with("pvabi_"), "{}", a.name);
            assert_eq!(a.size % a.align, 0);
            for b in &STRUCTS[i + 1..] {
                assert_ne!(a.name, b.name);
                assert_ne!(a.c_name, b.c_name);
            }
        }
    }
}
