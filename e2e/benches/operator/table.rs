//! Printing: plain-text tables (a label column, then one column per run) and the units
//! the figures are shown in.

use std::time::Duration;

use jiff::Timestamp;

use octopus_e2e::twin::replay::span;

/// A titled table; the first column holds row labels.
pub struct Table {
    title: String,
    notes: Vec<String>,
    header: Vec<String>,
    rows: Vec<Row>,
}

enum Row {
    Cells(String, Vec<String>),
    Section(String),
}

impl Table {
    pub fn new(title: impl Into<String>, columns: &[&str]) -> Self {
        Self {
            title: title.into(),
            notes: Vec::new(),
            header: columns.iter().map(|c| (*c).to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// A line printed under the title.
    pub fn note(&mut self, text: impl Into<String>) {
        self.notes.push(text.into());
    }

    pub fn row(&mut self, label: impl Into<String>, cells: Vec<String>) {
        self.rows.push(Row::Cells(label.into(), cells));
    }

    /// A sub-heading spanning the table.
    pub fn section(&mut self, label: impl Into<String>) {
        self.rows.push(Row::Section(label.into()));
    }

    pub fn print(&self) {
        let columns = self.header.len();
        let mut widths = vec![0; columns + 1];
        for row in &self.rows {
            if let Row::Cells(label, cells) = row {
                widths[0] = widths[0].max(label.chars().count());
                for (i, cell) in cells.iter().enumerate().take(columns) {
                    widths[i + 1] = widths[i + 1].max(cell.chars().count());
                }
            }
        }
        for (i, h) in self.header.iter().enumerate() {
            widths[i + 1] = widths[i + 1].max(h.chars().count());
        }
        let total = widths.iter().sum::<usize>() + 3 * columns;
        println!();
        println!("{}", self.title);
        println!("{}", "=".repeat(total.max(self.title.chars().count())));
        for note in &self.notes {
            println!("{note}");
        }
        let mut line = format!("{:<w$}", "", w = widths[0]);
        for (i, h) in self.header.iter().enumerate() {
            line.push_str(&format!("   {:>w$}", h, w = widths[i + 1]));
        }
        println!("{}", line.trim_end());
        for row in &self.rows {
            match row {
                Row::Section(label) => println!("{label}"),
                Row::Cells(label, cells) => {
                    let mut line = format!("{:<w$}", label, w = widths[0]);
                    for i in 0..columns {
                        let cell = cells.get(i).map_or("", String::as_str);
                        line.push_str(&format!("   {:>w$}", cell, w = widths[i + 1]));
                    }
                    println!("{}", line.trim_end());
                }
            }
        }
    }
}

/// Seconds with two decimals.
pub fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// `+S.SS s` after `origin`, or `-` when the moment never came.
pub fn at(origin: Timestamp, t: Option<Timestamp>) -> String {
    t.map_or_else(
        || "-".to_string(),
        |t| format!("+{:.2} s", span(origin, t).as_secs_f64()),
    )
}

/// Milliseconds, whole.
pub fn millis(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}

/// A share of a whole, as a percentage.
pub fn percent(part: Duration, whole: Duration) -> String {
    if whole.is_zero() {
        return "-".into();
    }
    format!("{:.0} %", 100.0 * part.as_secs_f64() / whole.as_secs_f64())
}

/// Kibibytes as MiB.
pub fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// A count that a counter holds as f64.
pub fn count(n: f64) -> String {
    format!("{}", n.round() as i64)
}
