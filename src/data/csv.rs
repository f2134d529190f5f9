//! Kaggle "digit-recognizer" CSV files.
//!
//! - `train.csv`: header `label,pixel0,...,pixel783`, then rows of 785 integers (label 0..9,
//!   pixels 0..255, row-major 28x28);
//! - `test.csv`: header `pixel0,...,pixel783`, rows of 784 pixels and no label.
//!
//! Which kind a file is comes from its header (first column named `label` or not), not from its
//! name. The image side is `sqrt(number of pixel columns)` (28 for 784). Every problem is reported
//! with the file and the 1-based line number: wrong column count (expected vs found), a
//! non-numeric value (which column), a pixel outside 0..=255, a label outside 0..=9, an empty
//! file, a missing header, a file separated by `;` or tabs. A quoted field is cut to a readable
//! length.

use std::path::Path;

use ::csv::{ByteRecord, ReaderBuilder};

use super::Dataset;
use crate::error::{excerpt, Error, Result};

/// Kaggle's digits have ten classes.
pub const DIGIT_CLASSES: usize = 10;

/// At most this many characters of a field are quoted in an error message.
const QUOTE_MAX: usize = 40;

/// The column layout read from a header line.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Layout {
    has_label: bool,
    num_pixels: usize,
    side: usize,
}

impl Layout {
    fn num_columns(&self) -> usize {
        self.num_pixels + self.has_label as usize
    }

    fn describe(&self) -> String {
        match self.has_label {
            true => format!("label + {} pixels", self.num_pixels),
            false => format!("{} pixels, no label", self.num_pixels),
        }
    }
}

/// Load a Kaggle digit CSV (labeled `train.csv` or unlabeled `test.csv`, told apart by the header).
pub fn load_kaggle_csv(path: impl AsRef<Path>) -> Result<Dataset> {
    let path = path.as_ref();
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut reader = ReaderBuilder::new()
        .has_headers(false)
        .flexible(true) // we check column counts ourselves, with a better message
        .from_reader(std::io::BufReader::new(file));
    let mut record = ByteRecord::new();
    if !read_record(path, &mut reader, &mut record)? {
        return Err(Error::data(
            path,
            None,
            "file is empty: expected a header line `label,pixel0,...` or `pixel0,...`",
        ));
    }
    let layout = parse_header(path, line_of(&record), &record)?;
    let (images, labels) = read_rows(path, &mut reader, &mut record, layout)?;
    let labels = layout.has_label.then_some(labels);
    Dataset::new(images, labels, [1, layout.side, layout.side], DIGIT_CLASSES)
}

/// Read every data row after the header into pixel and label buffers.
fn read_rows<R: std::io::Read>(
    path: &Path,
    reader: &mut ::csv::Reader<R>,
    record: &mut ByteRecord,
    layout: Layout,
) -> Result<(Vec<u8>, Vec<u8>)> {
    let (mut images, mut labels) = (Vec::new(), Vec::new());
    while read_record(path, reader, record)? {
        let line = line_of(record);
        check_column_count(path, line, record, layout)?;
        let first_pixel_col = layout.has_label as usize;
        if layout.has_label {
            labels.push(parse_label(path, line, &record[0])?);
        }
        for (col, field) in record.iter().enumerate().skip(first_pixel_col) {
            let pixel_index = col - first_pixel_col;
            images.push(parse_pixel(path, line, col, pixel_index, field)?);
        }
    }
    if images.is_empty() {
        return Err(Error::data(path, None, "the file has a header but no data rows"));
    }
    Ok((images, labels))
}

/// Read the next record; `false` at end of file. CSV-level errors keep their line number.
fn read_record<R: std::io::Read>(path: &Path, reader: &mut ::csv::Reader<R>, record: &mut ByteRecord) -> Result<bool> {
    reader.read_byte_record(record).map_err(|e| {
        let line = e.position().map(|p| p.line() as usize);
        Error::data(path, line, format!("unreadable CSV: {e}"))
    })
}

/// The 1-based line on which `record` starts.
fn line_of(record: &ByteRecord) -> Option<usize> {
    record.position().map(|p| p.line() as usize)
}

/// Work out the layout from the header, checking the column names are `[label,]pixel0..pixelN`.
fn parse_header(path: &Path, line: Option<usize>, header: &ByteRecord) -> Result<Layout> {
    let names: Vec<String> = header
        .iter()
        .map(|f| String::from_utf8_lossy(f).trim().to_string())
        .collect();
    if names.first().is_some_and(|n| n.parse::<i64>().is_ok()) {
        return Err(Error::data(
            path,
            line,
            "missing header: the first line holds numbers, expected `label,pixel0,...` or `pixel0,...`",
        ));
    }
    if let [only] = names.as_slice() {
        if let Some(sep) = [';', '\t', '|'].into_iter().find(|&c| only.contains(c)) {
            return Err(Error::data(
                path,
                line,
                format!(
                    "the header is one column, '{}': the file seems to be separated by {:?}, but vitcore reads \
                     comma-separated CSV (`label,pixel0,...`); convert it first",
                    excerpt(only, QUOTE_MAX),
                    sep
                ),
            ));
        }
    }
    let has_label = names.first().is_some_and(|n| n == "label");
    let pixel_names = &names[has_label as usize..];
    for (i, name) in pixel_names.iter().enumerate() {
        if *name != format!("pixel{i}") {
            let column = i + has_label as usize + 1;
            return Err(Error::data(
                path,
                line,
                format!(
                    "bad header: column {column} is named '{}', expected 'pixel{i}' (the first column may be 'label')",
                    excerpt(name, QUOTE_MAX)
                ),
            ));
        }
    }
    let num_pixels = pixel_names.len();
    let side = (num_pixels as f64).sqrt().round() as usize;
    if num_pixels == 0 || side * side != num_pixels {
        return Err(Error::data(
            path,
            line,
            format!("header has {num_pixels} pixel columns, which is not a square image (expected e.g. 784 = 28x28)"),
        ));
    }
    Ok(Layout {
        has_label,
        num_pixels,
        side,
    })
}

fn check_column_count(path: &Path, line: Option<usize>, record: &ByteRecord, layout: Layout) -> Result<()> {
    if record.len() != layout.num_columns() {
        return Err(Error::data(
            path,
            line,
            format!(
                "wrong number of columns: expected {} ({}), found {}",
                layout.num_columns(),
                layout.describe(),
                record.len()
            ),
        ));
    }
    Ok(())
}

fn parse_label(path: &Path, line: Option<usize>, field: &[u8]) -> Result<u8> {
    let value = parse_integer(path, line, field, "column 1 ('label')")?;
    if !(0..DIGIT_CLASSES as i64).contains(&value) {
        return Err(Error::data(
            path,
            line,
            format!("label {value} is outside 0..={}", DIGIT_CLASSES - 1),
        ));
    }
    Ok(value as u8)
}

fn parse_pixel(path: &Path, line: Option<usize>, col: usize, pixel: usize, field: &[u8]) -> Result<u8> {
    let column = format!("column {} ('pixel{pixel}')", col + 1);
    let value = parse_integer(path, line, field, &column)?;
    u8::try_from(value)
        .map_err(|_| Error::data(path, line, format!("{column}: pixel value {value} is outside 0..=255")))
}

/// Parse an integer field, or say which column holds what non-number.
fn parse_integer(path: &Path, line: Option<usize>, field: &[u8], column: &str) -> Result<i64> {
    let text = String::from_utf8_lossy(field);
    text.trim().parse::<i64>().map_err(|_| {
        Error::data(
            path,
            line,
            format!("{column}: '{}' is not an integer", excerpt(&text, QUOTE_MAX)),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(fields: &[&str]) -> ByteRecord {
        ByteRecord::from(fields.to_vec())
    }

    #[test]
    fn header_detection() {
        let p = Path::new("t.csv");
        let l = parse_header(p, Some(1), &record(&["label", "pixel0", "pixel1", "pixel2", "pixel3"])).unwrap();
        assert_eq!(
            l,
            Layout {
                has_label: true,
                num_pixels: 4,
                side: 2
            }
        );
        let l = parse_header(p, Some(1), &record(&["pixel0", "pixel1", "pixel2", "pixel3"])).unwrap();
        assert_eq!(
            l,
            Layout {
                has_label: false,
                num_pixels: 4,
                side: 2
            }
        );
        let e = parse_header(p, Some(1), &record(&["pixel0", "pixel1", "pixel2"])).unwrap_err();
        assert!(e.to_string().contains("not a square"), "{e}");
        let e = parse_header(p, Some(1), &record(&["label", "pixel0", "pxl1"])).unwrap_err();
        assert!(
            e.to_string().contains("column 3 is named 'pxl1', expected 'pixel1'"),
            "{e}"
        );
        let e = parse_header(p, Some(1), &record(&["3", "0", "0"])).unwrap_err();
        assert!(e.to_string().contains("missing header"), "{e}");
        let long = format!(
            "label;{}",
            (0..784).map(|i| format!("pixel{i}")).collect::<Vec<_>>().join(";")
        );
        let e = parse_header(p, Some(1), &record(&[&long])).unwrap_err().to_string();
        assert!(
            e.contains("separated by ';'") && e.contains("characters)") && e.len() < 300,
            "{e}"
        );
        let long_name = "x".repeat(500);
        let e = parse_header(p, Some(1), &record(&["label", &long_name]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("column 2") && e.len() < 300, "{e}");
    }
}
