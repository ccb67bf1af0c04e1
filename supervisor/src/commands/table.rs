//! Plain-text tables with aligned columns, for the commands' default output (`--json` is
//! for programs).

use std::fmt::Write;

/// Which side of its column a cell sticks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Align {
    Left,
    /// Numbers and sizes, so their digits line up.
    Right,
}

/// A table: a header row, then rows of the same width.
#[derive(Debug)]
pub struct Table {
    columns: Vec<(&'static str, Align)>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(columns: &[(&'static str, Align)]) -> Self {
        Table {
            columns: columns.to_vec(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        assert_eq!(
            cells.len(),
            self.columns.len(),
            "a row has a cell per column"
        );
        self.rows.push(cells);
    }

    /// The table, columns two spaces apart, no trailing spaces, one line per row.
    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self
            .columns
            .iter()
            .map(|(h, _)| h.chars().count())
            .collect();
        for r in &self.rows {
            for (w, c) in widths.iter_mut().zip(r) {
                *w = (*w).max(c.chars().count());
            }
        }
        let mut out = String::new();
        let header: Vec<String> = self.columns.iter().map(|(h, _)| h.to_string()).collect();
        for cells in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, (cell, ((_, align), w))) in cells
                .iter()
                .zip(self.columns.iter().zip(&widths))
                .enumerate()
            {
                if i > 0 {
                    line.push_str("  ");
                }
                let pad = w - cell.chars().count();
                match align {
                    Align::Left => {
                        line.push_str(cell);
                        line.extend(std::iter::repeat_n(' ', pad));
                    }
                    Align::Right => {
                        line.extend(std::iter::repeat_n(' ', pad));
                        line.push_str(cell);
                    }
                }
            }
            writeln!(out, "{}", line.trim_end()).expect("writing to a String");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_left_or_right_without_trailing_spaces() {
        let mut t = Table::new(&[
            ("NAME", Align::Left),
            ("BYTES", Align::Right),
            ("NOTE", Align::Left),
        ]);
        t.row(vec!["a".into(), "1".into(), "".into()]);
        t.row(vec!["longer".into(), "12345678".into(), "x".into()]);
        assert_eq!(
            t.render(),
            "NAME       BYTES  NOTE\n\
             a              1\n\
             longer  12345678  x\n"
        );
    }
}
