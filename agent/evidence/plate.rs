//! Licence plate text: greedy CTC decoding of the PaddleOCR recogniser output,
//! and normalisation/validation of Vietnamese plate reads.
//!
//! Accepted layouts, after dropping everything but `[A-Z0-9]` (`Đ` reads as `D`):
//! `PP` province (two digits, 11..=99), `S` series (one letter, optionally
//! followed by one letter or one digit), `N` number (4 or 5 digits).
//! * one row (car): `PP S[S] NNNN[N]` → `"51F-123.45"`, `"51F-1234"`,
//!   `"29LD-123.45"`; a car series is letters only, so `51F1-234.56` is refused
//!   (a letter+digit series is a motorbike's, read from two rows);
//! * two rows: top `PP S[S]`, bottom `NNNN[N]`; a two-character series is a
//!   motorbike plate, `"59-X1 234.56"` / `"59-X1 2345"`; a one-letter series
//!   is a square car plate and is written like a one-row car, `"51F-123.45"`.

pub use crate::infer::postprocess::ctc_greedy;

/// A normalised plate read.
#[derive(Debug, Clone, PartialEq)]
pub struct PlateText {
    /// Canonical text when valid (`"51F-123.45"`, `"59-X1 234.56"`); otherwise
    /// the cleaned rows concatenated, unformatted.
    pub text: String,
    /// What the reader produced, rows joined with a space.
    pub raw: String,
    /// Province code, two digits (`"51"`); `None` when invalid.
    pub province: Option<String>,
    /// Series (`"F"`, `"LD"`, `"X1"`); `None` when invalid.
    pub series: Option<String>,
    /// Number digits without separator (`"12345"`); `None` when invalid.
    pub number: Option<String>,
    /// The cleaned read matched one of the accepted layouts fully.
    pub valid: bool,
    /// The read came from two rows (top, bottom).
    pub two_row: bool,
}

/// Letters that may appear in a series.
const SERIES_LETTERS: &str = "ABCDEFGHKLMNPSTUVXYZ";

/// A character forced to a digit: digits cost 0, look-alike letters cost 1.
fn as_digit(c: char) -> Option<(char, u32)> {
    let d = match c {
        '0'..='9' => return Some((c, 0)),
        'O' | 'Q' | 'D' => '0',
        'I' | 'L' => '1',
        'Z' => '2',
        'S' => '5',
        'B' => '8',
        'G' => '6',
        'T' => '7',
        _ => return None,
    };
    Some((d, 1))
}

/// A character forced to a series letter: allowed letters cost 0, look-alike
/// digits cost 1.
fn as_letter(c: char) -> Option<(char, u32)> {
    if SERIES_LETTERS.contains(c) {
        return Some((c, 0));
    }
    let l = match c {
        '0' => 'D',
        '8' => 'B',
        '5' => 'S',
        '2' => 'Z',
        '6' => 'G',
        '4' => 'A',
        '7' => 'T',
        _ => return None,
    };
    Some((l, 1))
}

/// The optional second series character: an allowed letter as is; on a
/// motorbike (`digit_ok`) also a digit as is, or a letter that looks like a
/// digit (`O`, `I`, `Q`) at cost 1.
fn as_series2(c: char, digit_ok: bool) -> Option<(char, u32)> {
    if SERIES_LETTERS.contains(c) || (digit_ok && c.is_ascii_digit()) {
        Some((c, 0))
    } else if digit_ok {
        as_digit(c)
    } else {
        None
    }
}

/// Parsed fields and the number of look-alike substitutions they needed.
struct Fields {
    province: String,
    series: String,
    number: String,
    cost: u32,
}

/// Fits `chars` to province + series of `series_len` + number of the rest
/// (which must be 4 or 5 long); `digit_ok` allows a letter+digit series.
/// `None` when it cannot be made to fit.
fn fit(chars: &[char], series_len: usize, digit_ok: bool) -> Option<Fields> {
    let num_len = chars.len().checked_sub(2 + series_len)?;
    if !(4..=5).contains(&num_len) || !(1..=2).contains(&series_len) {
        return None;
    }
    let mut cost = 0;
    let mut take = |s: &mut String, r: Option<(char, u32)>| {
        r.map(|(c, k)| {
            s.push(c);
            cost += k;
        })
    };
    let (mut province, mut series, mut number) = (String::new(), String::new(), String::new());
    for &c in &chars[..2] {
        take(&mut province, as_digit(c))?;
    }
    take(&mut series, as_letter(chars[2]))?;
    if series_len == 2 {
        take(&mut series, as_series2(chars[3], digit_ok))?;
    }
    for &c in &chars[2 + series_len..] {
        take(&mut number, as_digit(c))?;
    }
    let code: u32 = province.parse().ok()?;
    if !(11..=99).contains(&code) {
        return None;
    }
    Some(Fields {
        province,
        series,
        number,
        cost,
    })
}

/// Number as written on the plate: `"123.45"` for five digits, as is for four.
fn fmt_number(n: &str) -> String {
    if n.len() == 5 {
        format!("{}.{}", &n[..3], &n[3..])
    } else {
        n.to_string()
    }
}

/// Uppercases, reads `Đ` as `D`, keeps only `[A-Z0-9]`.
fn clean(row: &str) -> Vec<char> {
    row.chars()
        .flat_map(char::to_uppercase)
        .map(|c| if c == 'Đ' { 'D' } else { c })
        .filter(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
        .collect()
}

/// Normalises and validates a plate read: `rows` is one row (car plate) or
/// two rows, top then bottom (motorbike or square car plate).
///
/// Look-alike characters are fixed by position (`I`→`1`, `S`→`5`, … where a
/// digit is required; `0`→`D`, `8`→`B`, … where a letter is required). For two
/// rows the row boundary fixes the layout; for one row every layout that fits
/// the length is tried and the one needing the fewest fixes wins, ties going
/// to a one-letter series (so `"51FS2345"` is `51FS-2345`, `"51FI2345"` is
/// `51F-123.45`).
/// Anything else — other row counts, wrong lengths, province outside 11..=99,
/// unfixable characters — is `valid: false` with all fields `None`.
pub fn parse_plate(rows: &[&str]) -> PlateText {
    let raw = rows.join(" ");
    let cleaned: Vec<Vec<char>> = rows.iter().map(|r| clean(r)).collect();
    let joined: Vec<char> = cleaned.concat();
    let two_row = rows.len() == 2;
    let parsed = match cleaned.as_slice() {
        [one] => [1, 2]
            .into_iter()
            .filter_map(|sl| fit(one, sl, false))
            .min_by_key(|f| f.cost), // min_by_key keeps the first of equals
        [top, _bottom] => top
            .len()
            .checked_sub(2)
            .and_then(|sl| fit(&joined, sl, true)),
        _ => None,
    };
    match parsed {
        Some(f) => {
            let text = if two_row && f.series.len() == 2 {
                format!("{}-{} {}", f.province, f.series, fmt_number(&f.number))
            } else {
                format!("{}{}-{}", f.province, f.series, fmt_number(&f.number))
            };
            PlateText {
                text,
                raw,
                province: Some(f.province),
                series: Some(f.series),
                number: Some(f.number),
                valid: true,
                two_row,
            }
        }
        None => PlateText {
            text: joined.into_iter().collect(),
            raw,
            province: None,
            series: None,
            number: None,
            valid: false,
            two_row,
        },
    }
}

/// Confidence of a plate read: the reader's own when the text is a valid
/// plate, halved when it is not, so invalid reads are marked low confidence.
pub fn plate_confidence(reader_conf: f32, valid: bool) -> f32 {
    if valid {
        reader_conf
    } else {
        reader_conf * 0.5
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dict() -> Vec<String> {
        ["A", "B", "1"].iter().map(|s| s.to_string()).collect()
    }

    /// One-hot-ish rows: class `c` gets `p`, the rest share the remainder.
    fn rows(seq: &[(usize, f32)], classes: usize) -> Vec<f32> {
        let mut v = Vec::new();
        for &(c, p) in seq {
            let rest = (1.0 - p) / (classes - 1) as f32;
            v.extend((0..classes).map(|i| if i == c { p } else { rest }));
        }
        v
    }

    #[test]
    fn ctc_collapse_blank_space() {
        // classes: 0 blank, 1 A, 2 B, 3 "1", 4 space
        let seq = [
            (1, 0.9),
            (1, 0.8),
            (0, 0.9),
            (1, 0.7),
            (4, 0.9),
            (2, 0.6),
            (3, 0.5),
        ];
        let p = rows(&seq, 5);
        let (t, c) = ctc_greedy(&p, seq.len(), 5, &dict());
        assert_eq!(t, "AAB1");
        assert!((c - (0.9 + 0.7 + 0.6 + 0.5) / 4.0).abs() < 1e-5);
    }

    #[test]
    fn ctc_empty_and_short() {
        let p = rows(&[(0, 0.9), (0, 0.9)], 5);
        assert_eq!(ctc_greedy(&p, 2, 5, &dict()), (String::new(), 0.0));
        assert_eq!(ctc_greedy(&[], 3, 5, &dict()), (String::new(), 0.0));
        assert_eq!(ctc_greedy(&p, 2, 0, &dict()), (String::new(), 0.0));
        // Claims more steps than there are: reads only complete rows.
        let (t, _) = ctc_greedy(&rows(&[(2, 0.9)], 5), 4, 5, &dict());
        assert_eq!(t, "B");
        // Space only, and out-of-range classes, keep nothing.
        let (t, c) = ctc_greedy(&rows(&[(4, 0.9), (5, 0.9)], 6), 2, 6, &dict());
        assert_eq!((t.as_str(), c), ("", 0.0));
    }

    fn ok(rows: &[&str], text: &str, p: &str, s: &str, n: &str) {
        let r = parse_plate(rows);
        assert!(r.valid, "{rows:?} -> {r:?}");
        assert_eq!(r.text, text, "{rows:?}");
        assert_eq!(r.province.as_deref(), Some(p));
        assert_eq!(r.series.as_deref(), Some(s));
        assert_eq!(r.number.as_deref(), Some(n));
        assert_eq!(r.two_row, rows.len() == 2);
    }

    fn bad(rows: &[&str]) {
        let r = parse_plate(rows);
        assert!(!r.valid, "{rows:?} -> {r:?}");
        assert_eq!((r.province, r.series, r.number), (None, None, None));
    }

    #[test]
    fn one_row_cars() {
        ok(&["51F-123.45"], "51F-123.45", "51", "F", "12345");
        ok(&["51F12345"], "51F-123.45", "51", "F", "12345");
        ok(&["30A 999.99"], "30A-999.99", "30", "A", "99999");
        ok(&["51F-1234"], "51F-1234", "51", "F", "1234");
        ok(&["29LD-123.45"], "29LD-123.45", "29", "LD", "12345");
        ok(&["29ld 1234"], "29LD-1234", "29", "LD", "1234");
    }

    #[test]
    fn two_row_plates() {
        ok(&["59-X1", "234.56"], "59-X1 234.56", "59", "X1", "23456");
        ok(&["29-B1", "12345"], "29-B1 123.45", "29", "B1", "12345");
        ok(&["59-X1", "2345"], "59-X1 2345", "59", "X1", "2345");
        ok(&["29-AA", "123.45"], "29-AA 123.45", "29", "AA", "12345");
        ok(&["29-MĐ", "123.45"], "29-MD 123.45", "29", "MD", "12345");
        // Square car plate: one-letter series, written like a one-row car.
        ok(&["51F", "123.45"], "51F-123.45", "51", "F", "12345");
        assert_eq!(parse_plate(&["59-X1", "234.56"]).raw, "59-X1 234.56");
    }

    #[test]
    fn ocr_confusions() {
        ok(&["5IF-I23.4S"], "51F-123.45", "51", "F", "12345");
        ok(&["51F-I2O.BG"], "51F-120.86", "51", "F", "12086");
        ok(&["518-123.45"], "51B-123.45", "51", "B", "12345"); // series 8 → B
        ok(&["59-XI", "Z34.S6"], "59-X1 234.56", "59", "X1", "23456");
        // An allowed letter in second series position stays a letter.
        ok(&["51FS2345"], "51FS-2345", "51", "FS", "2345");
        ok(&["51FI2345"], "51F-123.45", "51", "F", "12345");
    }

    #[test]
    fn invalid_reads() {
        bad(&["51F-12"]); // too short
        bad(&["05F-123.45"]); // province 05
        bad(&["10F-123.45"]); // province 10
        bad(&["51F-12K.45"]); // K cannot be a digit
        bad(&["51F-12A.45"]); // neither can A
        bad(&[""]);
        bad(&[]);
        bad(&["#@!~~"]);
        bad(&["ED51712"]); // Chinese-style plate
        bad(&["51F-123456"]); // number too long (no F1 series on one row)
        bad(&["5IW-123.45"]); // W is not a series letter
        bad(&["59-X12", "3456"]); // row boundary does not fit
        bad(&["59-X1", "234"]); // bottom too short
        bad(&["59", "X1", "23456"]); // three rows
        let r = parse_plate(&["51f-12k.45"]);
        assert_eq!(
            (r.text.as_str(), r.raw.as_str()),
            ("51F12K45", "51f-12k.45")
        );
        assert!(parse_plate(&["59-X1", "23"]).two_row);
    }

    #[test]
    fn confidence() {
        assert_eq!(plate_confidence(0.8, true), 0.8);
        assert_eq!(plate_confidence(0.8, false), 0.4);
    }
}
