//! Scenario rewrite rules: protocol-aware faults applied to matching
//! datagrams on a link direction, before the link's impairments.

use streamlab_core::sut::Protocol;
use streamlab_core::time::SimTime;

use crate::scenario::{RewriteRule, RuleAction, parse_hex};

/// Most extra copies one `duplicate` rule makes of a datagram.
pub(crate) const MAX_RULE_DUPLICATES: u32 = 16;

/// What the rules did to one datagram.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Applied {
    /// The bytes after rewriting, if any rule changed them.
    pub(crate) bytes: Option<Vec<u8>>,
    /// The rule that dropped it, if one did.
    pub(crate) dropped_by: Option<String>,
    /// One entry (the rule's name) per extra copy a rule asked for.
    pub(crate) duplicates: Vec<String>,
    /// What happened, one line per rule that acted.
    pub(crate) notes: Vec<String>,
}

struct Compiled {
    rule: RewriteRule,
    label: String,
    from: usize,
    to: usize,
    overwrite: Vec<u8>,
    matched: u64,
}

/// The rules of a scenario with their match counters.
pub(crate) struct RuleSet {
    rules: Vec<Compiled>,
    protocol: &'static dyn Protocol,
}

/// A datagram as rules see it: where it goes and its bytes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Datagram<'a> {
    pub(crate) from: usize,
    pub(crate) to: usize,
    pub(crate) src_port: u16,
    pub(crate) dst_port: u16,
    pub(crate) bytes: &'a [u8],
}

impl RuleSet {
    /// `host` resolves host names to indices (validated beforehand);
    /// `protocol` reads frame kinds and locates fields.
    pub(crate) fn new(
        rules: &[RewriteRule],
        host: impl Fn(&str) -> Option<usize>,
        protocol: &'static dyn Protocol,
    ) -> Self {
        let rules = rules
            .iter()
            .enumerate()
            .filter_map(|(i, r)| {
                Some(Compiled {
                    label: format!("inject.rules[{i}]"),
                    from: host(&r.from)?,
                    to: host(&r.to)?,
                    overwrite: match &r.action {
                        RuleAction::Overwrite(o) => parse_hex(&o.hex).ok()?,
                        _ => Vec::new(),
                    },
                    rule: r.clone(),
                    matched: 0,
                })
            })
            .collect();
        RuleSet { rules, protocol }
    }

    /// No rules at all (a network that runs no scenario's rules).
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn none() -> Self {
        RuleSet {
            rules: Vec::new(),
            protocol: crate::registry::protocols()[0],
        }
    }

    /// Apply every rule for `from → to` to `bytes`, in order.
    pub(crate) fn apply(&mut self, now: SimTime, d: Datagram<'_>) -> Applied {
        let mut out = Applied::default();
        let mut cur: Option<Vec<u8>> = None;
        let protocol = self.protocol;
        // The frame kind, read once per version of the bytes (a rewrite
        // invalidates it), not once per rule.
        let mut kind: Option<Option<&'static str>> = None;
        for c in &mut self.rules {
            if c.from != d.from || c.to != d.to {
                continue;
            }
            let data = cur.as_deref().unwrap_or(d.bytes);
            let m = &c.rule.matching;
            if m.src_port.is_some_and(|p| p != d.src_port)
                || m.dst_port.is_some_and(|p| p != d.dst_port)
            {
                continue;
            }
            if let Some(want) = &m.kind {
                let have = *kind.get_or_insert_with(|| protocol.classify(data).kind);
                if have != Some(want.as_str()) {
                    continue;
                }
            }
            let ms = now.as_millis();
            if m.from_ms.is_some_and(|f| ms < f) || m.until_ms.is_some_and(|u| ms >= u) {
                continue;
            }
            c.matched = c.matched.saturating_add(1);
            if let Some(nth) = m.nth {
                let count = m.count.unwrap_or(1);
                if c.matched < nth || c.matched >= nth.saturating_add(count) {
                    continue;
                }
            }
            let what = describe_match(m.kind.as_deref(), c.matched);
            let mut b = data.to_vec();
            let note = match &c.rule.action {
                RuleAction::SetField(f) => match protocol.locate_field(&f.field, &b) {
                    Some(range) => set_field(&mut b, range, f.value, &f.field),
                    None => format!(
                        "a {} datagram of {} bytes has no {} field; unchanged",
                        protocol.classify(&b).kind.unwrap_or("unknown"),
                        b.len(),
                        f.field
                    ),
                },
                RuleAction::Truncate(n) => {
                    let old = b.len();
                    b.truncate(*n);
                    format!("truncated {old} → {} bytes", b.len())
                }
                RuleAction::Overwrite(o) => {
                    // Validation bounds offset + len to 65507; stay safe anyway.
                    let end = o.offset.saturating_add(c.overwrite.len()).min(65_507);
                    let n = end.saturating_sub(o.offset);
                    if b.len() < end {
                        b.resize(end, 0);
                    }
                    let old =
                        hex::encode(data.get(o.offset..end.min(data.len())).unwrap_or_default());
                    if let (Some(dst), Some(src)) = (b.get_mut(o.offset..end), c.overwrite.get(..n))
                    {
                        dst.copy_from_slice(src);
                    }
                    format!(
                        "overwrote bytes {}..{end}: {old} → {}",
                        o.offset,
                        hex::encode(&c.overwrite)
                    )
                }
                RuleAction::Drop => {
                    out.dropped_by = Some(c.label.clone());
                    out.notes.push(format!("rule {}: dropped {what}", c.label));
                    break;
                }
                RuleAction::Duplicate(n) => {
                    // Validation allows 1..=16; never more, whatever the rule.
                    let n = (*n).min(MAX_RULE_DUPLICATES);
                    out.duplicates.extend((0..n).map(|_| c.label.clone()));
                    out.notes
                        .push(format!("rule {}: {n} extra copies of {what}", c.label));
                    continue;
                }
            };
            out.notes.push(format!("rule {}: {what}: {note}", c.label));
            cur = Some(b);
            kind = None;
        }
        out.bytes = cur;
        out
    }
}

fn describe_match(kind: Option<&str>, n: u64) -> String {
    match kind {
        Some(k) => format!("{k} #{n}"),
        None => format!("datagram #{n}"),
    }
}

/// Write `value` big-endian into a field in place (its low bytes, as many
/// as the field is wide); a datagram too short for it is left alone (and
/// the note says so).
fn set_field(b: &mut [u8], range: std::ops::Range<usize>, value: u64, name: &str) -> String {
    match b.get_mut(range.clone()) {
        Some(slot) if slot.len() <= 8 => {
            let old = hex::encode(&*slot);
            let be = value.to_be_bytes();
            slot.copy_from_slice(&be[8 - slot.len()..]);
            format!("set {name} 0x{old} → 0x{}", hex::encode(&*slot))
        }
        Some(slot) => format!(
            "the {name} field is {} bytes wide, more than a value holds; unchanged",
            slot.len()
        ),
        None => format!(
            "datagram of {} bytes has no {name} field (bytes {}..{}); unchanged",
            b.len(),
            range.start,
            range.end
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::{FrameMatch, Overwrite};

    fn rule(kind: Option<&str>, nth: Option<u64>, action: RuleAction) -> RewriteRule {
        RewriteRule {
            from: "server".into(),
            to: "client".into(),
            matching: FrameMatch {
                kind: kind.map(str::to_string),
                nth,
                ..FrameMatch::default()
            },
            action,
        }
    }

    fn set(rules: Vec<RewriteRule>) -> RuleSet {
        RuleSet::new(
            &rules,
            |n| match n {
                "client" => Some(1),
                "server" => Some(0),
                _ => None,
            },
            &streamlab_mediastream::sut::MediaStream,
        )
    }

    fn dg(from: usize, to: usize, bytes: &[u8]) -> Datagram<'_> {
        Datagram {
            from,
            to,
            src_port: 4444,
            dst_port: 49152,
            bytes,
        }
    }

    fn set_field(field: &str, value: u64) -> RuleAction {
        RuleAction::SetField(crate::scenario::SetField {
            field: field.into(),
            value,
        })
    }

    fn start_ack(sid: u64) -> Vec<u8> {
        let mut b = vec![2, 1, 0, 0];
        b.extend_from_slice(&sid.to_be_bytes());
        b.extend_from_slice(&[0, 0]);
        b
    }

    #[test]
    fn sets_stream_id_only_on_the_nth_match_of_its_direction() {
        let mut rs = set(vec![rule(
            Some("START_ACK"),
            Some(2),
            set_field("stream_id", 0xdead),
        )]);
        let t = SimTime::ZERO;
        // Other direction: not counted.
        assert_eq!(rs.apply(t, dg(1, 0, &start_ack(7))), Applied::default());
        // First START_ACK: counted, not acted on.
        assert_eq!(rs.apply(t, dg(0, 1, &start_ack(7))).bytes, None);
        // DATA: not a match.
        assert_eq!(rs.apply(t, dg(0, 1, &[16, 1, 0, 0])).bytes, None);
        let second = rs.apply(t, dg(0, 1, &start_ack(7)));
        assert_eq!(second.bytes, Some(start_ack(0xdead)));
        assert_eq!(
            second.notes,
            vec![
                "rule inject.rules[0]: START_ACK #2: set stream_id 0x0000000000000007 → 0x000000000000dead"
            ]
        );
        // Third: past the window.
        assert_eq!(rs.apply(t, dg(0, 1, &start_ack(7))).bytes, None);
    }

    #[test]
    fn truncate_overwrite_drop_and_duplicate() {
        let mut rs = set(vec![
            rule(None, None, RuleAction::Truncate(3)),
            rule(
                None,
                None,
                RuleAction::Overwrite(Overwrite {
                    offset: 4,
                    hex: "aa bb".into(),
                }),
            ),
            rule(None, None, RuleAction::Duplicate(2)),
        ]);
        let a = rs.apply(SimTime::ZERO, dg(0, 1, &start_ack(1)));
        assert_eq!(a.bytes, Some(vec![2, 1, 0, 0, 0xaa, 0xbb]));
        assert_eq!(a.duplicates.len(), 2);
        assert_eq!(a.dropped_by, None);
        let mut rs = set(vec![rule(Some("START_ACK"), None, RuleAction::Drop)]);
        let d = rs.apply(SimTime::ZERO, dg(0, 1, &start_ack(1)));
        assert_eq!(d.dropped_by.as_deref(), Some("inject.rules[0]"));
    }

    #[test]
    fn ports_select_and_fields_follow_the_frame_kind() {
        let mut r = rule(None, None, set_field("sequence", 9));
        r.matching.dst_port = Some(49152);
        let mut rs = set(vec![r]);
        // A START_ACK has no sequence field: left alone, with a note.
        let a = rs.apply(SimTime::ZERO, dg(0, 1, &start_ack(1)));
        assert_eq!(a.bytes, Some(start_ack(1)));
        assert!(a.notes[0].contains("no sequence field"), "{:?}", a.notes);
        // Another destination port: no match at all.
        let bytes = start_ack(1);
        let mut other = dg(0, 1, &bytes);
        other.dst_port = 5000;
        assert_eq!(rs.apply(SimTime::ZERO, other), Applied::default());
    }

    #[test]
    fn short_datagram_is_left_alone_with_a_note() {
        let mut rs = set(vec![rule(None, None, set_field("stream_id", 1))]);
        let a = rs.apply(SimTime::ZERO, dg(0, 1, &[1, 1]));
        assert_eq!(a.bytes, Some(vec![1, 1]));
        assert!(
            a.notes[0].contains("has no stream_id field"),
            "{:?}",
            a.notes
        );
    }
}
