//! The ladder diagram (message sequence chart) of a run as inline SVG.
//!
//! One lifeline per host; one row per drawn message, protocol event, failed
//! check and band of bulk traffic, in time order, so labels never share a
//! row; arrows slant from the send row to the arrival time (interpolated
//! between rows). Every element carries `data-*` attributes (kind, hosts,
//! time, trace event) that scripts and tests read.

use std::fmt::Write as _;

use streamlab_core::time::SimTime;

use super::esc;
use super::model::{Fate, Ladder};

const LEFT: f64 = 110.0;
const TOP: f64 = 56.0;
const MSG_ROW: f64 = 24.0;
const EVENT_ROW: f64 = 18.0;
const BAND_ROW: f64 = 30.0;
const BAND_LINE: f64 = 13.0;

enum Item {
    Message(usize),
    Event(usize),
    Marker(usize),
    Band(usize),
}

fn ms(t: SimTime) -> String {
    format!("{:.3}", t.as_micros() as f64 / 1000.0)
}

/// Render the ladder; returns the SVG element.
pub fn svg(l: &Ladder) -> String {
    let n = l.hosts.len().max(1);
    let spacing = if n <= 1 {
        300.0
    } else {
        (900.0 / (n - 1) as f64).clamp(240.0, 340.0)
    };
    let x = |h: usize| LEFT + 60.0 + spacing * h as f64;
    let width = x(n - 1) + 260.0;
    // Rows in time order.
    let mut items: Vec<(SimTime, u8, Item)> = Vec::new();
    for (i, m) in l.messages.iter().enumerate() {
        if !m.bulk {
            items.push((m.at, 1, Item::Message(i)));
        }
    }
    for (i, e) in l.events.iter().enumerate() {
        items.push((e.at, 0, Item::Event(i)));
    }
    for (i, k) in l.markers.iter().enumerate() {
        items.push((k.at, 2, Item::Marker(i)));
    }
    for (i, b) in l.bands.iter().enumerate() {
        items.push((b.from, 1, Item::Band(i)));
    }
    items.sort_by_key(|(t, order, _)| (*t, *order));
    let mut rows: Vec<(SimTime, f64)> = Vec::new();
    let mut y = TOP;
    let mut last_t: Option<SimTime> = None;
    let mut item_y = Vec::with_capacity(items.len());
    for (t, _, item) in &items {
        if let Some(p) = last_t {
            let dt_ms = t.as_micros().saturating_sub(p.as_micros()) as f64 / 1000.0;
            y += (4.0 * (1.0 + dt_ms).log2()).min(30.0);
        }
        let h = match item {
            Item::Message(_) | Item::Marker(_) => MSG_ROW,
            Item::Event(_) => EVENT_ROW,
            Item::Band(b) => BAND_ROW + BAND_LINE * l.bands[*b].counts.len() as f64,
        };
        item_y.push(y);
        rows.push((*t, y));
        if let Item::Band(b) = item {
            // The band spans its time range: its end maps to its bottom.
            rows.push((l.bands[*b].until, y + h - 10.0));
        }
        y += h;
        last_t = Some(match item {
            Item::Band(b) => l.bands[*b].until,
            _ => *t,
        });
    }
    let end_y = y + 20.0;
    rows.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
    let y_at = |t: SimTime| -> f64 {
        match rows.iter().position(|(rt, _)| *rt >= t) {
            Some(0) => rows[0].1,
            Some(i) => {
                let (t0, y0) = rows[i - 1];
                let (t1, y1) = rows[i];
                if t1 == t0 {
                    y1
                } else {
                    let f = (t.as_micros() - t0.as_micros()) as f64
                        / (t1.as_micros() - t0.as_micros()) as f64;
                    y0 + (y1 - y0) * f
                }
            }
            None => rows.last().map_or(TOP, |r| r.1 + 14.0).min(end_y - 4.0),
        }
    };
    let height = end_y + 10.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r##"<svg id="ladder" xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" data-height="{height:.0}" font-family="sans-serif" font-size="11">
<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="context-stroke"/></marker></defs>
"##
    );
    // Lifelines.
    for (i, h) in l.hosts.iter().enumerate() {
        let _ = write!(
            s,
            r##"<g class="lifeline" data-host="{h}"><rect x="{:.1}" y="8" width="120" height="24" rx="4" fill="#e8eef7" stroke="#4a6fa5"/><text x="{:.1}" y="24" text-anchor="middle" font-weight="bold" font-size="12">{h}</text><line x1="{:.1}" y1="32" x2="{:.1}" y2="{end_y:.1}" stroke="#9aa9bd" stroke-dasharray="4 3"/></g>"##,
            x(i) - 60.0,
            x(i),
            x(i),
            x(i),
            h = esc(h)
        );
    }
    let culprits: Vec<u64> = l.markers.iter().map(|m| m.event).collect();
    for ((t, _, item), iy) in items.iter().zip(&item_y) {
        let iy = *iy;
        match item {
            Item::Message(i) => {
                let m = &l.messages[*i];
                let (Some(a), Some(b)) = (m.from, m.to) else {
                    continue;
                };
                let (xa, xb) = (x(a), x(b));
                let culprit = culprits.contains(&m.event);
                let color = if culprit {
                    "#c0392b"
                } else if m.injected.is_some() {
                    "#8e44ad"
                } else {
                    "#2c3e50"
                };
                let width = if culprit { 2.5 } else { 1.3 };
                let _ = writeln!(
                    s,
                    r#"<g class="msg{}" data-kind="{}" data-from="{}" data-to="{}" data-t-us="{}" data-event="{}" data-y="{iy:.1}">"#,
                    if culprit { " culprit" } else { "" },
                    esc(&m.kind),
                    esc(&l.hosts[a]),
                    esc(&l.hosts[b]),
                    t.as_micros(),
                    m.event
                );
                let _ = write!(
                    s,
                    r##"<text x="8" y="{:.1}" fill="#666">{} ms</text>"##,
                    iy + 4.0,
                    ms(*t)
                );
                let mut title = format!(
                    "{} at {} ms, {} → {}",
                    m.label,
                    ms(m.at),
                    l.hosts[a],
                    l.hosts[b]
                );
                if let Some(r) = &m.injected {
                    title.push_str(&format!("; injected by {r}"));
                }
                for note in &m.notes {
                    title.push_str(&format!("; {note}"));
                }
                for c in &m.copies {
                    let dash = match c.corrupted {
                        Some(_) => r#" stroke-dasharray="5 3""#,
                        None => "",
                    };
                    let stroke = if c.corrupted.is_some() && !culprit {
                        "#d35400"
                    } else {
                        color
                    };
                    let mut note = Vec::new();
                    if c.index > 0 {
                        note.push(format!("duplicate {}", c.index));
                    }
                    if c.reordered {
                        note.push("reordered".to_string());
                    }
                    if let Some((off, caught)) = c.corrupted {
                        note.push(format!(
                            "bit flipped at byte {off}{}",
                            if caught {
                                ", caught by the checksum"
                            } else {
                                ", delivered"
                            }
                        ));
                    }
                    match &c.fate {
                        Fate::Arrived(at) => {
                            let yb = y_at(*at).max(iy);
                            let _ = write!(
                                s,
                                r#"<line class="copy" x1="{xa:.1}" y1="{iy:.1}" x2="{xb:.1}" y2="{yb:.1}" stroke="{stroke}" stroke-width="{width}"{dash} marker-end="url(#arrow)"><title>{}; arrived {} ms{}</title></line>"#,
                                esc(&title),
                                ms(*at),
                                esc(&note.iter().map(|n| format!("; {n}")).collect::<String>())
                            );
                            if c.reordered || c.index > 0 {
                                let _ = write!(
                                    s,
                                    r##"<text x="{:.1}" y="{:.1}" fill="#d35400" font-size="9" text-anchor="middle">{}</text>"##,
                                    (xa + xb) / 2.0,
                                    (iy + yb) / 2.0 + 10.0,
                                    esc(&note.join(", "))
                                );
                            }
                        }
                        Fate::Dropped(at, cause, detail) => {
                            let yd = y_at(*at).max(iy);
                            let f = if *at == m.at { 0.45 } else { 0.7 };
                            let xd = xa + (xb - xa) * f;
                            let _ = write!(
                                s,
                                r##"<g class="drop" data-cause="{}" data-t-us="{}" data-event="{}"><line x1="{xa:.1}" y1="{iy:.1}" x2="{xd:.1}" y2="{yd:.1}" stroke="{stroke}" stroke-width="{width}"{dash}/><text x="{xd:.1}" y="{:.1}" text-anchor="middle" fill="#c0392b" font-size="15" font-weight="bold">✗</text><text x="{:.1}" y="{:.1}" fill="#c0392b" font-size="10">{}</text><title>{}; dropped at {} ms: {}{}</title></g>"##,
                                esc(cause),
                                at.as_micros(),
                                m.event,
                                yd + 5.0,
                                xd + 8.0,
                                yd + 13.0,
                                esc(cause),
                                esc(&title),
                                ms(*at),
                                esc(detail),
                                esc(&note.iter().map(|n| format!("; {n}")).collect::<String>())
                            );
                        }
                        Fate::Open => {
                            let _ = write!(
                                s,
                                r#"<line class="copy open" x1="{xa:.1}" y1="{iy:.1}" x2="{:.1}" y2="{iy:.1}" stroke="{stroke}" stroke-dasharray="2 2"><title>{}; still on its way when the trace ended</title></line>"#,
                                xa + (xb - xa) * 0.3,
                                esc(&title)
                            );
                        }
                    }
                }
                let (tx, anchor) = if xb >= xa {
                    (xa + 6.0, "start")
                } else {
                    (xa - 6.0, "end")
                };
                let mut label = m.label.clone();
                if m.injected.is_some() {
                    label.push_str(" [injected]");
                }
                if !m.notes.is_empty() {
                    label.push_str(" [rule]");
                }
                let _ = write!(
                    s,
                    r#"<text x="{tx:.1}" y="{:.1}" text-anchor="{anchor}" fill="{color}">{}</text></g>"#,
                    iy - 4.0,
                    esc(&label)
                );
            }
            Item::Event(i) => {
                let e = &l.events[*i];
                let hx = x(e.host);
                let short: String = e.text.chars().take(60).collect();
                let _ = writeln!(
                    s,
                    r##"<g class="event" data-host="{}" data-t-us="{}" data-y="{iy:.1}"><circle cx="{hx:.1}" cy="{iy:.1}" r="3.5" fill="#16a085"/><text x="{:.1}" y="{:.1}" fill="#16a085" font-size="10">{}</text><title>{} ms {}: {}</title></g>"##,
                    esc(&l.hosts[e.host]),
                    e.at.as_micros(),
                    hx + 7.0,
                    iy + 3.5,
                    esc(&short),
                    ms(e.at),
                    esc(&l.hosts[e.host]),
                    esc(&e.text)
                );
            }
            Item::Marker(i) => {
                let k = &l.markers[*i];
                let _ = writeln!(
                    s,
                    r##"<g class="check-marker" data-check="{}" data-event="{}" data-t-us="{}" data-y="{iy:.1}"><line x1="{LEFT:.1}" y1="{iy:.1}" x2="{:.1}" y2="{iy:.1}" stroke="#c0392b" stroke-width="1.5" stroke-dasharray="6 3"/><text x="{:.1}" y="{:.1}" fill="#c0392b" font-weight="bold">⚠ {}</text><text x="8" y="{:.1}" fill="#c0392b">{} ms</text><title>{} failed at trace event {} ({} ms): {}</title></g>"##,
                    esc(&k.check),
                    k.event,
                    k.at.as_micros(),
                    width - 10.0,
                    LEFT + 4.0,
                    iy - 4.0,
                    esc(&k.check),
                    iy + 4.0,
                    ms(k.at),
                    esc(&k.check),
                    k.event,
                    ms(k.at),
                    esc(&k.observed)
                );
            }
            Item::Band(i) => {
                let b = &l.bands[*i];
                let lines = b.lines(&l.hosts);
                let h = BAND_ROW + BAND_LINE * lines.len() as f64;
                let lost: u64 = b.counts.values().map(|(_, l)| l).sum();
                let cx = (x(0) + x(n - 1)) / 2.0;
                let _ = writeln!(
                    s,
                    r##"<g class="band" data-t-us="{}" data-until-us="{}" data-lost="{lost}" data-y="{iy:.1}"><rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" rx="5" fill="#eaf2fb" stroke="#9ab7d8"/>"##,
                    b.from.as_micros(),
                    b.until.as_micros(),
                    x(0) - 50.0,
                    iy - 8.0,
                    x(n - 1) - x(0) + 100.0,
                    h - 6.0,
                );
                for (k, line) in lines.iter().enumerate() {
                    let _ = write!(
                        s,
                        r##"<text x="{cx:.1}" y="{:.1}" text-anchor="middle" fill="#2c3e50">{}</text>"##,
                        iy + 7.0 + BAND_LINE * k as f64,
                        esc(line)
                    );
                }
                let _ = write!(
                    s,
                    r##"<text x="{cx:.1}" y="{:.1}" text-anchor="middle" fill="#666" font-size="10">{} – {} ms</text><text x="8" y="{:.1}" fill="#666">{} ms</text><title>{}</title></g>"##,
                    iy + 7.0 + BAND_LINE * lines.len() as f64,
                    ms(b.from),
                    ms(b.until),
                    iy + 4.0,
                    ms(b.from),
                    esc(&lines.join("; "))
                );
            }
        }
    }
    let _ = write!(
        s,
        r##"<text x="8" y="{:.1}" fill="#666">end {} ms</text></svg>"##,
        end_y,
        ms(l.ended)
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::html::model::{Copy, Event, Message};

    /// 3 hosts, 200 control messages (many sent in the same millisecond)
    /// and protocol events: every labelled row has its own band of height,
    /// so no two labels overlap at default zoom.
    #[test]
    fn labels_never_share_a_row() {
        let hosts = vec!["a".to_string(), "b".to_string(), "c".to_string()];
        let mut messages = Vec::new();
        for i in 0..200u64 {
            let at = SimTime::from_micros((i / 3) * 1000);
            messages.push(Message {
                event: i,
                at,
                from: Some((i % 3) as usize),
                to: Some(((i + 1) % 3) as usize),
                kind: "CTRL".into(),
                label: format!("CTRL id={i}"),
                injected: None,
                notes: Vec::new(),
                copies: vec![Copy {
                    index: 0,
                    fate: if i % 7 == 0 {
                        Fate::Dropped(at, "loss".into(), "loss: random".into())
                    } else {
                        Fate::Arrived(at + std::time::Duration::from_millis(5))
                    },
                    corrupted: None,
                    reordered: false,
                }],
                bulk: false,
            });
        }
        let events = (0..50u64)
            .map(|i| Event {
                at: SimTime::from_micros(i * 1000),
                host: (i % 3) as usize,
                text: format!("event {i}"),
            })
            .collect();
        let l = Ladder {
            hosts,
            messages,
            events,
            ended: SimTime::from_millis(100),
            ..Ladder::default()
        };
        let svg = svg(&l);
        let mut ys: Vec<f64> = svg
            .split("data-y=\"")
            .skip(1)
            .map(|s| s[..s.find('"').unwrap()].parse().unwrap())
            .collect();
        assert_eq!(ys.len(), 250);
        ys.sort_by(f64::total_cmp);
        for w in ys.windows(2) {
            assert!(
                w[1] - w[0] >= EVENT_ROW - 1e-9,
                "rows {} and {} overlap",
                w[0],
                w[1]
            );
        }
        assert_eq!(svg.matches("class=\"drop\"").count(), 29);
        // Bounded: a row per item plus the time gaps.
        let height: f64 = svg
            .split("data-height=\"")
            .nth(1)
            .map(|s| s[..s.find('"').unwrap()].parse().unwrap())
            .unwrap();
        assert!(height < 250.0 * MSG_ROW + 100.0 * 30.0, "{height}");
    }
}
