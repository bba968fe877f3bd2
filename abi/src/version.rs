//! Spec chapter "Versioning and negotiation": version numbers.
//!
//! A version is one `u32`: the major number in bits 31:16 and the minor number in bits 15:0.
//! Minor versions only add (a call, a feature bit, a field taken from a reserved field); a
//! change or a removal needs a new major version.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// A pvabi specification version, `major << 16 | minor`.
#[repr(transparent)]
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    FromBytes,
    IntoBytes,
    KnownLayout,
    Immutable,
)]
pub struct Version(pub u32);

impl Version {
    /// Builds a version from its major and minor numbers.
    ///
    /// ```
    /// use pvabi_abi::version::Version;
    /// let v = Version::new(1, 0);
    /// assert_eq!(v.0, 0x0001_0000);
    /// assert_eq!((v.major(), v.minor()), (1, 0));
    /// ```
    pub const fn new(major: u16, minor: u16) -> Self {
        Version(((major as u32) << 16) | minor as u32)
    }

    /// The major number (bits 31:16).
    pub const fn major(self) -> u16 {
        (self.0 >> 16) as u16
    }

    /// The minor number (bits 15:0).
    pub const fn minor(self) -> u16 {
        self.0 as u16
    }
}

impl core::fmt::Display for Version {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}.{}", self.major(), self.minor())
    }
}

/// The major number of this release of the specification.
pub const VERSION_MAJOR: u16 = 1;
/// The minor number of this release of the specification.
pub const VERSION_MINOR: u16 = 3;
/// This release of the specification, `VERSION_MAJOR << 16 | VERSION_MINOR`.
pub const SPEC_VERSION: u32 = 0x0001_0003;

/// Version 1.0, the first release.
pub const V1_0: Version = Version::new(1, 0);
/// Version 1.1: adds the steal-time page.
pub const V1_1: Version = Version::new(1, 1);
/// Version 1.2: the spec-precision release. Every rule is exact and testable (the drain point,
/// entry checks, result slots, one policy for corrupt indices, ring unregistering, the
/// reference platform); a guest that relies on those guarantees asks for minor 2.
pub const V1_2: Version = Version::new(1, 2);
/// Version 1.3: batches past one page. MULTICALL_PAGES (feature `MULTICALL_PAGES`) runs up to
/// 4096 entries in one exit, the entries given as a list of pages so that no structure the host
/// reads crosses a page.
pub const V1_3: Version = Version::new(1, 3);
/// Version 2.0, a preview of the next major version (see [`crate::preview2`]). It is not a
/// release: hosts may serve it beside 1.x so that the path of a major bump can be tried.
pub const V2_0_PREVIEW: Version = Version::new(2, 0);

static_assertions::const_assert_eq!(SPEC_VERSION, Version::new(VERSION_MAJOR, VERSION_MINOR).0);
