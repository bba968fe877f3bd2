//! Host events on request: a test guest of the conformance suite cannot make a host migrate
//! it or change its time-stamp counters, so it asks, with a line of the verdict channel
//! written by CONSOLE_WRITE:
//!
//! ```text
//! pvabi-conform: REQUEST <event>
//! ```
//!
//! A host that performs the event on request ([`HostConfig::host_events`]) does so before the
//! asking vCPU runs guest code again, and then writes, to the same console, the line
//!
//! ```text
//! pvabi-conform: DONE <event>
//! ```
//!
//! before any vCPU runs guest code again, so that the suite's runner knows the event happened
//! (the conformance suite's `channel` module defines both lines). A host that does not perform it writes
//! nothing and the guest goes on. The dispatcher finds the request in the console bytes and
//! hands it to the VMM ([`Machine::request_host_event`](crate::Machine::request_host_event));
//! the VMM, once it has performed the event with every vCPU paused, calls
//! [`Dispatcher::host_event_performed`](crate::Dispatcher::host_event_performed), which brings
//! the time page up to date (PVABI-TIME-010) and writes the DONE line.
//!
//! [`HostConfig::host_events`]: crate::HostConfig::host_events

use std::fmt;

/// What starts a request line.
pub const REQUEST_PREFIX: &str = "pvabi-conform: REQUEST ";
/// What starts the line a host writes once it has performed a requested event.
pub const DONE_PREFIX: &str = "pvabi-conform: DONE ";

/// An event a test guest can ask the host for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HostEvent {
    /// `migrate`: migrate the virtual machine (the reference host: to a new KVM VM over the
    /// same guest RAM, every vCPU's state saved and restored).
    Migrate,
    /// `tsc-offset`: move every vCPU's time-stamp counter by one large amount (at least
    /// 2^32 ticks), all vCPUs paused.
    TscOffset,
}

impl HostEvent {
    /// Every event.
    pub const ALL: [HostEvent; 2] = [HostEvent::Migrate, HostEvent::TscOffset];

    /// Its name in a request line.
    pub const fn name(self) -> &'static str {
        match self {
            HostEvent::Migrate => "migrate",
            HostEvent::TscOffset => "tsc-offset",
        }
    }

    /// The event named `name`, if any.
    pub fn from_name(name: &str) -> Option<HostEvent> {
        HostEvent::ALL.into_iter().find(|e| e.name() == name)
    }

    /// The line a host writes once it performed the event.
    pub fn done_line(self) -> String {
        format!("{DONE_PREFIX}{}\n", self.name())
    }
}

impl fmt::Display for HostEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The events requested by the lines of `bytes` (console output of one call): each line that
/// is exactly [`REQUEST_PREFIX`] and an event's name (a trailing `\r` and spaces allowed).
pub(crate) fn requests(bytes: &[u8]) -> Vec<HostEvent> {
    let prefix = REQUEST_PREFIX.as_bytes();
    bytes
        .split(|&b| b == b'\n')
        .filter_map(|line| line.strip_prefix(prefix))
        .filter_map(|rest| std::str::from_utf8(rest).ok())
        .filter_map(|name| HostEvent::from_name(name.trim_end()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_whole_lines_naming_an_event() {
        let out = b"log\npvabi-conform: REQUEST migrate\npvabi-conform: PASS x\n\
                    pvabi-conform: REQUEST tsc-offset \npvabi-conform: REQUEST reboot\n\
                    say pvabi-conform: REQUEST migrate\npvabi-conform: REQUEST migrated\n";
        assert_eq!(
            requests(out),
            [HostEvent::Migrate, HostEvent::TscOffset],
            "only lines that start with the prefix and name a known event"
        );
        assert!(requests(b"pvabi-conform: DONE migrate\n").is_empty());
        for e in HostEvent::ALL {
            assert_eq!(HostEvent::from_name(e.name()), Some(e));
            assert!(e.done_line().starts_with(DONE_PREFIX));
        }
    }
}
