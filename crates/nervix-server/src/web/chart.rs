//! Server-rendered SVG charts: a line over time, bars, and a workflow's DAG. Each comes as a
//! `<figure>` with a caption and its data as a table, so it reads without JavaScript, without
//! images, and to a screen reader. Colours come from the stylesheet (classes, no inline
//! style: the CSP allows none), so they follow light and dark mode.

use std::collections::HashMap;
use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use uuid::Uuid;

const W: f64 = 640.0;
const H: f64 = 220.0;
const PAD_L: f64 = 56.0;
const PAD_R: f64 = 16.0;
const PAD_T: f64 = 16.0;
const PAD_B: f64 = 32.0;

/// Escapes text for HTML and SVG content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn figure(
    id: &str,
    caption: &str,
    svg: &str,
    header: (&str, &str),
    rows: &[(String, String)],
) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<figure class="chart" aria-labelledby="{id}-cap">{svg}<figcaption id="{id}-cap">{}</figcaption><details><summary>Data table</summary><table><thead><tr><th scope="col">{}</th><th scope="col">{}</th></tr></thead><tbody>"#,
        esc(caption),
        esc(header.0),
        esc(header.1)
    );
    for (a, b) in rows {
        let _ = write!(out, "<tr><td>{}</td><td>{}</td></tr>", esc(a), esc(b));
    }
    out.push_str("</tbody></table></details></figure>");
    out
}

/// A line over time. `points` in any order; `fmt` labels a value.
pub fn line(
    id: &str,
    caption: &str,
    points: &[(DateTime<Utc>, f64)],
    fmt: impl Fn(f64) -> String,
) -> String {
    let mut pts: Vec<(DateTime<Utc>, f64)> = points.to_vec();
    pts.sort_by_key(|p| p.0);
    let rows: Vec<(String, String)> = pts
        .iter()
        .map(|(t, v)| (t.format("%Y-%m-%d %H:%M").to_string(), fmt(*v)))
        .collect();
    let summary = match (pts.first(), pts.last()) {
        (Some(a), Some(b)) => format!(
            "{caption}: {} points, from {} to {}",
            pts.len(),
            fmt(a.1),
            fmt(b.1)
        ),
        _ => format!("{caption}: no data yet"),
    };
    let mut svg = format!(
        r#"<svg viewBox="0 0 {W} {H}" role="img" aria-labelledby="{id}-t" class="line" preserveAspectRatio="xMidYMid meet"><title id="{id}-t">{}</title>"#,
        esc(&summary)
    );
    let (lo, hi) = pts.iter().fold((f64::MAX, f64::MIN), |(lo, hi), p| {
        (lo.min(p.1), hi.max(p.1))
    });
    let (lo, hi) = if pts.is_empty() {
        (0.0, 1.0)
    } else if (hi - lo).abs() < f64::EPSILON {
        (lo - 1.0, hi + 1.0)
    } else {
        (lo, hi)
    };
    let (t0, t1) = match (pts.first(), pts.last()) {
        (Some(a), Some(b)) => (a.0.timestamp() as f64, b.0.timestamp() as f64),
        _ => (0.0, 1.0),
    };
    let span = if t1 > t0 { t1 - t0 } else { 1.0 };
    let x = |t: f64| PAD_L + (t - t0) / span * (W - PAD_L - PAD_R);
    let y = |v: f64| PAD_T + (1.0 - (v - lo) / (hi - lo)) * (H - PAD_T - PAD_B);
    axes(&mut svg, &fmt(lo), &fmt(hi));
    if let (Some(a), Some(b)) = (pts.first(), pts.last()) {
        let _ = write!(
            svg,
            r#"<text x="{PAD_L}" y="{}" class="tick">{}</text><text x="{}" y="{}" class="tick" text-anchor="end">{}</text>"#,
            H - 8.0,
            a.0.format("%Y-%m-%d"),
            W - PAD_R,
            H - 8.0,
            b.0.format("%Y-%m-%d")
        );
    }
    if pts.len() == 1 {
        let _ = write!(
            svg,
            r#"<circle cx="{:.1}" cy="{:.1}" r="4" class="dot"/>"#,
            (PAD_L + W - PAD_R) / 2.0,
            y(pts[0].1)
        );
    } else if !pts.is_empty() {
        let path: Vec<String> = pts
            .iter()
            .map(|(t, v)| format!("{:.1},{:.1}", x(t.timestamp() as f64), y(*v)))
            .collect();
        let _ = write!(
            svg,
            r#"<polyline points="{}" class="series" fill="none"/>"#,
            path.join(" ")
        );
    }
    svg.push_str("</svg>");
    figure(id, caption, &svg, ("Time (UTC)", "Value"), &rows)
}

fn axes(svg: &mut String, lo: &str, hi: &str) {
    let _ = write!(
        svg,
        r#"<line x1="{PAD_L}" y1="{PAD_T}" x2="{PAD_L}" y2="{}" class="axis"/><line x1="{PAD_L}" y1="{}" x2="{}" y2="{}" class="axis"/><text x="{}" y="{}" class="tick" text-anchor="end">{}</text><text x="{}" y="{}" class="tick" text-anchor="end">{}</text>"#,
        H - PAD_B,
        H - PAD_B,
        W - PAD_R,
        H - PAD_B,
        PAD_L - 6.0,
        PAD_T + 4.0,
        esc(hi),
        PAD_L - 6.0,
        H - PAD_B,
        esc(lo)
    );
}

/// Bars, one per label, from zero.
pub fn bars(
    id: &str,
    caption: &str,
    data: &[(String, f64)],
    fmt: impl Fn(f64) -> String,
) -> String {
    let rows: Vec<(String, String)> = data.iter().map(|(l, v)| (l.clone(), fmt(*v))).collect();
    let total: f64 = data.iter().map(|d| d.1).sum();
    let summary = if data.is_empty() {
        format!("{caption}: nothing yet")
    } else {
        format!("{caption}: {} over {} periods", fmt(total), data.len())
    };
    let mut svg = format!(
        r#"<svg viewBox="0 0 {W} {H}" role="img" aria-labelledby="{id}-t" class="bars"><title id="{id}-t">{}</title>"#,
        esc(&summary)
    );
    let hi = data.iter().map(|d| d.1).fold(0.0_f64, f64::max);
    let hi = if hi <= 0.0 { 1.0 } else { hi };
    axes(&mut svg, &fmt(0.0), &fmt(hi));
    let n = data.len().max(1) as f64;
    let slot = (W - PAD_L - PAD_R) / n;
    for (i, (label, v)) in data.iter().enumerate() {
        let h = (v / hi) * (H - PAD_T - PAD_B);
        let x = PAD_L + i as f64 * slot + slot * 0.15;
        let _ = write!(
            svg,
            r#"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{h:.1}" class="bar"><title>{}: {}</title></rect>"#,
            H - PAD_B - h,
            slot * 0.7,
            esc(label),
            esc(&fmt(*v))
        );
    }
    if let (Some(a), Some(b)) = (data.first(), data.last()) {
        let _ = write!(
            svg,
            r#"<text x="{PAD_L}" y="{}" class="tick">{}</text><text x="{}" y="{}" class="tick" text-anchor="end">{}</text>"#,
            H - 8.0,
            esc(&a.0),
            W - PAD_R,
            H - 8.0,
            esc(&b.0)
        );
    }
    svg.push_str("</svg>");
    figure(id, caption, &svg, ("Period", "Amount"), &rows)
}

/// One task of a workflow, as the DAG draws it.
pub struct Node {
    pub id: Uuid,
    pub key: String,
    pub title: String,
    pub status: String,
    pub depends_on: Vec<Uuid>,
}

/// A workflow's tasks in columns by depth (longest chain of dependencies before them), with an
/// arrow from each dependency; each box is coloured by its task's status.
pub fn dag(id: &str, caption: &str, nodes: &[Node]) -> String {
    let index: HashMap<Uuid, usize> = nodes.iter().enumerate().map(|(i, n)| (n.id, i)).collect();
    let mut depth = vec![0usize; nodes.len()];
    // Longest path by relaxation: at most n rounds for an acyclic graph.
    for _ in 0..nodes.len() {
        let mut changed = false;
        for (i, n) in nodes.iter().enumerate() {
            for d in n.depends_on.iter().filter_map(|d| index.get(d)) {
                if depth[i] < depth[*d] + 1 {
                    depth[i] = depth[*d] + 1;
                    changed = true;
                }
            }
        }
        if !changed {
            break;
        }
    }
    let (bw, bh, gx, gy) = (170.0, 46.0, 60.0, 18.0);
    let mut rows_in = HashMap::<usize, usize>::new();
    let mut pos = vec![(0.0, 0.0); nodes.len()];
    for (i, d) in depth.iter().enumerate() {
        let r = rows_in.entry(*d).or_default();
        pos[i] = (10.0 + *d as f64 * (bw + gx), 10.0 + *r as f64 * (bh + gy));
        *r += 1;
    }
    let cols = depth.iter().max().map_or(1, |d| d + 1) as f64;
    let rows = rows_in.values().max().copied().unwrap_or(1) as f64;
    let (w, h) = (20.0 + cols * (bw + gx) - gx, 20.0 + rows * (bh + gy) - gy);
    let mut svg = format!(
        r#"<svg viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" aria-labelledby="{id}-t" class="dag"><title id="{id}-t">{}</title><defs><marker id="{id}-arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="6" markerHeight="6" orient="auto"><path d="M0,0 L10,5 L0,10 z" class="arrowhead"/></marker></defs>"#,
        esc(&format!("{caption}: {} tasks", nodes.len()))
    );
    for (i, n) in nodes.iter().enumerate() {
        for d in n.depends_on.iter().filter_map(|d| index.get(d)) {
            let (x1, y1) = (pos[*d].0 + bw, pos[*d].1 + bh / 2.0);
            let (x2, y2) = (pos[i].0, pos[i].1 + bh / 2.0);
            let _ = write!(
                svg,
                r#"<line x1="{x1}" y1="{y1}" x2="{x2}" y2="{y2}" class="edge" marker-end="url(#{id}-arrow)"/>"#
            );
        }
    }
    for (i, n) in nodes.iter().enumerate() {
        let (x, y) = pos[i];
        let label: String = n.key.chars().take(22).collect();
        let _ = write!(
            svg,
            r#"<g class="node s-{}"><title>{} ({})</title><rect x="{x}" y="{y}" width="{bw}" height="{bh}" rx="6"/><text x="{}" y="{}" class="key">{}</text><text x="{}" y="{}" class="status">{}</text></g>"#,
            esc(&n.status),
            esc(&n.title),
            esc(&n.status),
            x + 8.0,
            y + 19.0,
            esc(&label),
            x + 8.0,
            y + 37.0,
            esc(&n.status)
        );
    }
    svg.push_str("</svg>");
    let rows: Vec<(String, String)> = nodes
        .iter()
        .map(|n| {
            let deps: Vec<String> = n
                .depends_on
                .iter()
                .filter_map(|d| index.get(d).map(|i| nodes[*i].key.clone()))
                .collect();
            let after = if deps.is_empty() {
                String::new()
            } else {
                format!(", after {}", deps.join(", "))
            };
            (n.key.clone(), format!("{}{after}", n.status))
        })
        .collect();
    figure(id, caption, &svg, ("Task", "Status"), &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_everywhere() {
        let nodes = [Node {
            id: Uuid::now_v7(),
            key: "<script>alert(1)</script>".into(),
            title: "\"><img src=x>".into(),
            status: "open".into(),
            depends_on: vec![],
        }];
        let out = dag("d", "Workflow <b>", &nodes);
        assert!(!out.contains("<script>") && !out.contains("<img") && !out.contains("<b>"));
        assert!(out.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    }

    #[test]
    fn dag_columns_follow_dependencies() {
        let (a, b, c) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let node = |id, key: &str, deps: Vec<Uuid>| Node {
            id,
            key: key.into(),
            title: key.into(),
            status: "open".into(),
            depends_on: deps,
        };
        let out = dag(
            "d",
            "w",
            &[
                node(c, "c", vec![b]),
                node(b, "b", vec![a]),
                node(a, "a", vec![]),
            ],
        );
        // a in column 0, b in column 1, c in column 2: three columns wide, one row high.
        assert!(out.contains(r#"viewBox="0 0 650 66""#), "{out}");
        assert!(
            out.contains(r#"<title>c (open)</title><rect x="470" y="10""#),
            "{out}"
        );
        assert_eq!(out.matches("class=\"edge\"").count(), 2);
        assert!(out.contains("<td>c</td><td>open, after b</td>"));
    }

    #[test]
    fn line_has_a_text_alternative() {
        let t = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let out = line(
            "r",
            "Reputation",
            &[(t, 50.0), (t + chrono::Duration::days(1), 61.5)],
            |v| format!("{v:.2}"),
        );
        assert!(out.contains("Reputation: 2 points, from 50.00 to 61.50"));
        assert!(out.contains("<polyline"));
        assert!(out.contains("<td>61.50</td>"));
    }
}
