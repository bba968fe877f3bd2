//! Verdicts and their order.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The outcome of a check or a test, least severe first: when a test has several, the most
/// severe wins (as in XTF). FAIL is the implementation's fault; ERROR the test's or the
/// environment's; CRASH means no verdict arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Verdict {
    /// Every check held.
    Pass,
    /// The test could not apply (a feature not offered, a platform without the mechanism),
    /// with a reason. Never hides a FAIL: a claimed feature that is absent is a FAIL.
    Skip,
    /// A FAIL that the implementation's profile lists as a known failure of this
    /// implementation id and version, with a reason: shown as such, never as a PASS. Only the
    /// runner concludes it; a guest cannot report it.
    #[serde(rename = "XFAIL")]
    KnownFailure,
    /// The test or its environment went wrong (a check could not be made), not the host.
    Error,
    /// The implementation broke a rule.
    Fail,
    /// No verdict arrived: the guest stopped, faulted or timed out before its end line.
    Crash,
}

impl Verdict {
    /// Every verdict, least severe first.
    pub const ALL: [Verdict; 6] = [
        Verdict::Pass,
        Verdict::Skip,
        Verdict::KnownFailure,
        Verdict::Error,
        Verdict::Fail,
        Verdict::Crash,
    ];

    /// The word on the channel and in reports.
    pub const fn name(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Skip => "SKIP",
            Verdict::KnownFailure => "XFAIL",
            Verdict::Error => "ERROR",
            Verdict::Fail => "FAIL",
            Verdict::Crash => "CRASH",
        }
    }

    /// The shutdown code a test guest ends with for this verdict, and the runner's exit status
    /// for a run with this worst verdict (XTF's numbering, which keeps 1 and 2 free for tools
    /// that use them): 0, 3, 4, 5, and 6 for CRASH and 7 for XFAIL, which only the runner can
    /// conclude.
    pub const fn exit_code(self) -> u32 {
        match self {
            Verdict::Pass => 0,
            Verdict::Skip => 3,
            Verdict::KnownFailure => 7,
            Verdict::Error => 4,
            Verdict::Fail => 5,
            Verdict::Crash => 6,
        }
    }

    /// The verdict a shutdown code stands for (`None` for codes the channel does not define).
    pub fn from_exit_code(code: u32) -> Option<Verdict> {
        Verdict::ALL.into_iter().find(|v| v.exit_code() == code)
    }

    /// The most severe of `verdicts`, PASS for none.
    pub fn worst(verdicts: impl IntoIterator<Item = Verdict>) -> Verdict {
        verdicts.into_iter().max().unwrap_or(Verdict::Pass)
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A word that is not a verdict.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a verdict (PASS, SKIP, ERROR, FAIL or CRASH)")]
pub struct NotAVerdict(pub String);

impl FromStr for Verdict {
    type Err = NotAVerdict;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Verdict::ALL
            .into_iter()
            .find(|v| v.name() == s)
            .ok_or_else(|| NotAVerdict(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_severe_wins() {
        use Verdict::*;
        assert_eq!(Verdict::worst([]), Pass);
        assert_eq!(Verdict::worst([Pass, Skip]), Skip);
        assert_eq!(Verdict::worst([KnownFailure, Skip]), KnownFailure);
        assert_eq!(Verdict::worst([KnownFailure, Error]), Error);
        assert_eq!(Verdict::worst([Skip, Error, Pass]), Error);
        assert_eq!(Verdict::worst([Error, Fail]), Fail);
        assert_eq!(Verdict::worst([Fail, Crash, Pass]), Crash);
    }

    #[test]
    fn names_and_codes_round_trip() {
        for v in Verdict::ALL {
            assert_eq!(v.name().parse::<Verdict>(), Ok(v));
            assert_eq!(Verdict::from_exit_code(v.exit_code()), Some(v));
            assert_eq!(serde_json::to_string(&v).unwrap(), format!("\"{v}\""));
        }
        assert!("pass".parse::<Verdict>().is_err());
        assert_eq!(Verdict::from_exit_code(1), None);
    }
}
