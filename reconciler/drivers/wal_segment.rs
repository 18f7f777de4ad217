//! WAL segment names and LSNs: the arithmetic a catch-up needs to say which
//! segments come after the volume's and how far replay must get. Pure functions;
//! no I/O, and nothing here decides whether to catch up.
//!
//! Segments are 16 MiB, PostgreSQL's default and what barman archives here; a
//! name is `TTTTTTTTLLLLLLLLSSSSSSSS` (timeline, log, segment within the log).

/// Bytes per WAL segment (PostgreSQL's default `wal_segment_size`).
pub const SEGMENT_BYTES: u64 = 16 * 1024 * 1024;
const SEGMENTS_PER_LOG: u64 = 0x1_0000_0000 / SEGMENT_BYTES;

/// One WAL segment, by timeline and position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Segment {
    /// The timeline.
    pub timeline: u32,
    /// The segment number from the start of WAL.
    pub number: u64,
}

impl Segment {
    /// Reads a segment file name; `None` for anything else (history files,
    /// `.partial`, temporary names).
    pub fn parse(name: &str) -> Option<Self> {
        if name.len() != 24 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let timeline = u32::from_str_radix(&name[..8], 16).ok()?;
        let log = u64::from_str_radix(&name[8..16], 16).ok()?;
        let seg = u64::from_str_radix(&name[16..], 16).ok()?;
        (seg < SEGMENTS_PER_LOG).then_some(Segment {
            timeline,
            number: log * SEGMENTS_PER_LOG + seg,
        })
    }

    /// The segment after this one, on the same timeline.
    pub fn next(self) -> Self {
        Segment {
            number: self.number + 1,
            ..self
        }
    }

    /// The LSN where this segment starts.
    pub fn start_lsn(self) -> u64 {
        self.number * SEGMENT_BYTES
    }

    /// The LSN where this segment ends (where the next starts).
    pub fn end_lsn(self) -> u64 {
        (self.number + 1) * SEGMENT_BYTES
    }
}

impl std::fmt::Display for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:08X}{:08X}{:08X}",
            self.timeline,
            self.number / SEGMENTS_PER_LOG,
            self.number % SEGMENTS_PER_LOG
        )
    }
}

/// The history file barman archives when a server switches to `timeline`.
pub fn history_file(timeline: u32) -> String {
    format!("{timeline:08X}.history")
}

/// Reads an LSN as postgres prints it (`0/4500A0B8`).
pub fn parse_lsn(text: &str) -> Option<u64> {
    let (high, low) = text.trim().split_once('/')?;
    let high = u64::from_str_radix(high, 16).ok()?;
    let low = u64::from_str_radix(low, 16).ok()?;
    (high <= u64::from(u32::MAX) && low <= u64::from(u32::MAX)).then_some((high << 32) | low)
}

/// Prints an LSN as postgres does.
pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_cross_a_log_boundary() {
        let s = Segment::parse("0000000100000000000000FF").unwrap();
        assert_eq!(s.to_string(), "0000000100000000000000FF");
        assert_eq!(s.next().to_string(), "000000010000000100000000");
        assert_eq!(format_lsn(s.end_lsn()), "1/0");
        assert_eq!(format_lsn(s.start_lsn()), "0/FF000000");
    }

    #[test]
    fn only_segment_names_parse() {
        for other in [
            "00000002.history",
            "000000010000000000000045.partial",
            "00000001000000000000004G",
            "000000010000000000000100",
            "",
        ] {
            assert_eq!(Segment::parse(other), None, "{other}");
        }
    }

    #[test]
    fn lsns_read_as_postgres_prints_them() {
        assert_eq!(parse_lsn("0/4500A0B8"), Some(0x4500_A0B8));
        assert_eq!(parse_lsn("1/0"), Some(1 << 32));
        assert_eq!(parse_lsn("in recovery"), None);
        assert_eq!(format_lsn(0x1_4500_A0B8), "1/4500A0B8");
        assert_eq!(history_file(2), "00000002.history");
    }
}
