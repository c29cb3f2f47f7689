//! What the user sees, one module per report, and the table helpers they share.
//!
//! * [`cell`]: the report under a metered cell, its live display, `%carbon summary` and
//!   `%carbon csv`;
//! * [`llm`]: what `%llm` shows (answers, comparison table, charts, explanation, models, history,
//!   summary);
//! * [`class`]: the class report over many `emissions.csv` files (`carbon-kernel report`);
//! * [`chart`]: SVG charts with plotters, the palette every chart uses;
//! * [`png`]: each chart as its own output, SVG plus a PNG copy for untrusted front-ends;
//! * [`figure`]: a small chart as shapes, written as SVG and drawn as PNG without an SVG parser
//!   (the cell report's chart and `%llm`'s comparison chart, sent with every metered cell and
//!   every request);
//! * [`map`]: the world map of `%carbon intensity`.
//!
//! Numbers with units come from [`crate::units`], so every report writes them the same way.

pub mod cell;
pub mod chart;
#[cfg(test)]
pub(crate) mod chart_tests;
pub mod class;
pub mod figure;
pub mod llm;
pub mod map;
pub mod png;

/// `s` escaped for HTML text.
pub(crate) fn esc(s: &str) -> String {
    html_escape::encode_text(s).into_owned()
}

/// A plain HTML table, cells right-aligned (numbers line up), styled inline so it renders the
/// same in every front-end.
pub(crate) fn html_table(head: &[&str], rows: &[Vec<String>]) -> String {
    let mut h = String::from(
        "<table class=\"carbon-llm\" style=\"border-collapse:collapse;font-size:0.9em\"><thead><tr>",
    );
    for c in head {
        h.push_str(&format!(
            "<th style=\"text-align:right;padding:2px 6px;border-bottom:1px solid #999\">{}</th>",
            esc(c)
        ));
    }
    h.push_str("</tr></thead><tbody>");
    for r in rows {
        h.push_str("<tr>");
        for c in r {
            h.push_str(&format!(
                "<td style=\"text-align:right;padding:2px 6px\">{}</td>",
                esc(c)
            ));
        }
        h.push_str("</tr>");
    }
    h.push_str("</tbody></table>");
    h
}

/// The same table as text: columns right-aligned to their widest cell, two spaces apart.
pub(crate) fn text_table(head: &[&str], rows: &[Vec<String>]) -> String {
    let n = head.len();
    let mut w: Vec<usize> = head.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate().take(n) {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| -> String {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{:>width$}", c, width = w[i]))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = line(head.to_vec());
    out.push('\n');
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
        out.push('\n');
    }
    out
}

/// `s` cut to `n` characters, the last one an ellipsis when something was cut.
pub(crate) fn short(s: &str, n: usize) -> String {
    if s.chars().count() > n {
        s.chars().take(n - 1).collect::<String>() + "…"
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_and_escape() {
        let rows = vec![vec!["a<b".to_string(), "1".to_string()]];
        assert!(
            html_table(&["x", "y"], &rows)
                .contains("<td style=\"text-align:right;padding:2px 6px\">a&lt;b</td>")
        );
        assert_eq!(text_table(&["x", "yy"], &rows), "  x  yy\na<b   1\n");
        assert_eq!(short("abcdef", 4), "abc…");
        assert_eq!(short("abc", 4), "abc");
    }
}
