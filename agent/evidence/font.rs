//! 5x7 bitmap glyphs for burning text (camera name, time, track id) into evidence pictures.
//!
//! Each glyph is seven rows, top row first; the low five bits of a row are its
//! pixels, with bit 4 (`0b10000`) the leftmost column. Lowercase letters share
//! the uppercase glyph, Latin letters with diacritics (including Vietnamese)
//! lose the diacritic, and anything else is drawn as a hollow box.

pub const GLYPH_W: usize = 5;
pub const GLYPH_H: usize = 7;

/// Drawn for any character the font does not know.
const BOX: [u8; 7] = [
    0b11111, 0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b11111,
];

/// Map a character to the plain uppercase ASCII character whose glyph stands for it.
/// Characters outside the font come back unchanged (and then render as `BOX`).
fn fold(c: char) -> char {
    let lower = c.to_lowercase().next().unwrap_or(c);
    match lower {
        'à' | 'á' | 'ả' | 'ã' | 'ạ' | 'ă' | 'ắ' | 'ằ' | 'ẳ' | 'ẵ' | 'ặ' | 'â' | 'ấ' | 'ầ' | 'ẩ'
        | 'ẫ' | 'ậ' | 'ä' | 'å' | 'ā' => 'A',
        'ç' | 'ć' | 'č' => 'C',
        'đ' | 'ď' => 'D',
        'è' | 'é' | 'ẻ' | 'ẽ' | 'ẹ' | 'ê' | 'ế' | 'ề' | 'ể' | 'ễ' | 'ệ' | 'ë' | 'ē' | 'ě' => {
            'E'
        }
        'ì' | 'í' | 'ỉ' | 'ĩ' | 'ị' | 'î' | 'ï' | 'ī' => 'I',
        'ñ' | 'ń' | 'ň' => 'N',
        'ò' | 'ó' | 'ỏ' | 'õ' | 'ọ' | 'ô' | 'ố' | 'ồ' | 'ổ' | 'ỗ' | 'ộ' | 'ơ' | 'ớ' | 'ờ' | 'ở'
        | 'ỡ' | 'ợ' | 'ö' | 'ø' | 'ō' => 'O',
        'š' | 'ś' => 'S',
        'ù' | 'ú' | 'ủ' | 'ũ' | 'ụ' | 'ư' | 'ứ' | 'ừ' | 'ử' | 'ữ' | 'ự' | 'û' | 'ü' | 'ū' | 'ů' => {
            'U'
        }
        'ỳ' | 'ý' | 'ỷ' | 'ỹ' | 'ỵ' | 'ÿ' => 'Y',
        'ž' | 'ź' | 'ż' => 'Z',
        _ => c.to_ascii_uppercase(),
    }
}

/// The 5x7 bitmap for `c`, top row first, bit 4 = leftmost column.
pub fn glyph(c: char) -> [u8; 7] {
    match fold(c) {
        ' ' => [0, 0, 0, 0, 0, 0, 0],
        '0' => [
            0b01110, 0b10001, 0b10011, 0b10101, 0b11001, 0b10001, 0b01110,
        ],
        '1' => [
            0b00100, 0b01100, 0b00100, 0b00100, 0b00100, 0b00100, 0b01110,
        ],
        '2' => [
            0b01110, 0b10001, 0b00001, 0b00110, 0b01000, 0b10000, 0b11111,
        ],
        '3' => [
            0b11110, 0b00001, 0b00001, 0b01110, 0b00001, 0b00001, 0b11110,
        ],
        '4' => [
            0b00010, 0b00110, 0b01010, 0b10010, 0b11111, 0b00010, 0b00010,
        ],
        '5' => [
            0b11111, 0b10000, 0b11110, 0b00001, 0b00001, 0b10001, 0b01110,
        ],
        '6' => [
            0b00110, 0b01000, 0b10000, 0b11110, 0b10001, 0b10001, 0b01110,
        ],
        '7' => [
            0b11111, 0b00001, 0b00010, 0b00100, 0b01000, 0b01000, 0b01000,
        ],
        '8' => [
            0b01110, 0b10001, 0b10001, 0b01110, 0b10001, 0b10001, 0b01110,
        ],
        '9' => [
            0b01110, 0b10001, 0b10001, 0b01111, 0b00001, 0b00010, 0b01100,
        ],
        'A' => [
            0b01110, 0b10001, 0b10001, 0b11111, 0b10001, 0b10001, 0b10001,
        ],
        'B' => [
            0b11110, 0b10001, 0b10001, 0b11110, 0b10001, 0b10001, 0b11110,
        ],
        'C' => [
            0b01110, 0b10001, 0b10000, 0b10000, 0b10000, 0b10001, 0b01110,
        ],
        'D' => [
            0b11100, 0b10010, 0b10001, 0b10001, 0b10001, 0b10010, 0b11100,
        ],
        'E' => [
            0b11111, 0b10000, 0b10000, 0b11110, 0b10000, 0b10000, 0b11111,
        ],
        'F' => [
            0b11111, 0b10000, 0b10000, 0b11110, 0b10000, 0b10000, 0b10000,
        ],
        'G' => [
            0b01110, 0b10001, 0b10000, 0b10111, 0b10001, 0b10001, 0b01111,
        ],
        'H' => [
            0b10001, 0b10001, 0b10001, 0b11111, 0b10001, 0b10001, 0b10001,
        ],
        'I' => [
            0b01110, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b01110,
        ],
        'J' => [
            0b00111, 0b00010, 0b00010, 0b00010, 0b00010, 0b10010, 0b01100,
        ],
        'K' => [
            0b10001, 0b10010, 0b10100, 0b11000, 0b10100, 0b10010, 0b10001,
        ],
        'L' => [
            0b10000, 0b10000, 0b10000, 0b10000, 0b10000, 0b10000, 0b11111,
        ],
        'M' => [
            0b10001, 0b11011, 0b10101, 0b10101, 0b10001, 0b10001, 0b10001,
        ],
        'N' => [
            0b10001, 0b10001, 0b11001, 0b10101, 0b10011, 0b10001, 0b10001,
        ],
        'O' => [
            0b01110, 0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b01110,
        ],
        'P' => [
            0b11110, 0b10001, 0b10001, 0b11110, 0b10000, 0b10000, 0b10000,
        ],
        'Q' => [
            0b01110, 0b10001, 0b10001, 0b10001, 0b10101, 0b10010, 0b01101,
        ],
        'R' => [
            0b11110, 0b10001, 0b10001, 0b11110, 0b10100, 0b10010, 0b10001,
        ],
        'S' => [
            0b01111, 0b10000, 0b10000, 0b01110, 0b00001, 0b00001, 0b11110,
        ],
        'T' => [
            0b11111, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100,
        ],
        'U' => [
            0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b01110,
        ],
        'V' => [
            0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b01010, 0b00100,
        ],
        'W' => [
            0b10001, 0b10001, 0b10001, 0b10101, 0b10101, 0b10101, 0b01010,
        ],
        'X' => [
            0b10001, 0b10001, 0b01010, 0b00100, 0b01010, 0b10001, 0b10001,
        ],
        'Y' => [
            0b10001, 0b10001, 0b01010, 0b00100, 0b00100, 0b00100, 0b00100,
        ],
        'Z' => [
            0b11111, 0b00001, 0b00010, 0b00100, 0b01000, 0b10000, 0b11111,
        ],
        '-' => [0, 0, 0, 0b11111, 0, 0, 0],
        ':' => [0, 0b01100, 0b01100, 0, 0b01100, 0b01100, 0],
        '.' => [0, 0, 0, 0, 0, 0b01100, 0b01100],
        ',' => [0, 0, 0, 0, 0b01100, 0b00100, 0b01000],
        '/' => [
            0b00001, 0b00001, 0b00010, 0b00100, 0b01000, 0b10000, 0b10000,
        ],
        '_' => [0, 0, 0, 0, 0, 0, 0b11111],
        '#' => [
            0b01010, 0b01010, 0b11111, 0b01010, 0b11111, 0b01010, 0b01010,
        ],
        '(' => [
            0b00010, 0b00100, 0b01000, 0b01000, 0b01000, 0b00100, 0b00010,
        ],
        ')' => [
            0b01000, 0b00100, 0b00010, 0b00010, 0b00010, 0b00100, 0b01000,
        ],
        '+' => [0, 0b00100, 0b00100, 0b11111, 0b00100, 0b00100, 0],
        '=' => [0, 0, 0b11111, 0, 0b11111, 0, 0],
        '%' => [
            0b11000, 0b11001, 0b00010, 0b00100, 0b01000, 0b10011, 0b00011,
        ],
        '[' => [
            0b01110, 0b01000, 0b01000, 0b01000, 0b01000, 0b01000, 0b01110,
        ],
        ']' => [
            0b01110, 0b00010, 0b00010, 0b00010, 0b00010, 0b00010, 0b01110,
        ],
        '>' => [
            0b01000, 0b00100, 0b00010, 0b00001, 0b00010, 0b00100, 0b01000,
        ],
        '<' => [
            0b00010, 0b00100, 0b01000, 0b10000, 0b01000, 0b00100, 0b00010,
        ],
        '\'' => [0b00100, 0b00100, 0b01000, 0, 0, 0, 0],
        _ => BOX,
    }
}

/// Width in pixels of `s` drawn at `scale`: each char takes GLYPH_W + 1 columns (glyph + gap).
pub fn text_width(s: &str, scale: usize) -> usize {
    s.chars().count() * (GLYPH_W + 1) * scale
}

/// Calls `put(x, y)` for every lit pixel of `s`, origin at the top-left of the first glyph.
/// Each glyph pixel becomes a `scale`×`scale` block; glyphs are separated by `scale` columns.
pub fn render(s: &str, scale: usize, mut put: impl FnMut(usize, usize)) {
    let advance = (GLYPH_W + 1) * scale;
    for (i, c) in s.chars().enumerate() {
        let x0 = i * advance;
        for (row, bits) in glyph(c).iter().enumerate() {
            for col in 0..GLYPH_W {
                if bits & (0b10000 >> col) == 0 {
                    continue;
                }
                for dy in 0..scale {
                    for dx in 0..scale {
                        put(x0 + col * scale + dx, row * scale + dy);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PUNCT: &str = "-:.,/_#()+=%[]><'";

    fn alnum() -> Vec<char> {
        ('0'..='9').chain('A'..='Z').collect()
    }

    #[test]
    fn digits_and_letters_are_distinct() {
        let cs = alnum();
        for (i, &a) in cs.iter().enumerate() {
            assert_ne!(glyph(a), BOX, "{a} falls back to the box");
            for &b in &cs[i + 1..] {
                assert_ne!(glyph(a), glyph(b), "{a} and {b} share a glyph");
            }
        }
    }

    #[test]
    fn covered_glyphs_are_not_blank_and_fit() {
        for c in alnum().into_iter().chain(PUNCT.chars()) {
            let g = glyph(c);
            assert!(g.iter().any(|&r| r != 0), "{c:?} is blank");
            assert!(
                g.iter().all(|&r| r < 1 << GLYPH_W),
                "{c:?} uses bits beyond 5 columns"
            );
            assert_ne!(g, BOX, "{c:?} falls back to the box");
        }
        assert_eq!(glyph(' '), [0; GLYPH_H]);
    }

    #[test]
    fn case_and_diacritics_fold() {
        for (l, u) in ('a'..='z').zip('A'..='Z') {
            assert_eq!(glyph(l), glyph(u));
        }
        assert_eq!(glyph('Đ'), glyph('D'));
        assert_eq!(glyph('đ'), glyph('D'));
        assert_eq!(glyph('ệ'), glyph('E'));
        assert_eq!(glyph('Ệ'), glyph('E'));
        for (s, base) in [
            ("àáảãạăắằẳẵặâấầẩẫậ", 'A'),
            ("ìíỉĩị", 'I'),
            ("ỳýỷỹỵ", 'Y'),
            ("òóỏõọôốồổỗộơớờởỡợ", 'O'),
            ("ùúủũụưứừửữự", 'U'),
            ("èéẻẽẹêếềểễệ", 'E'),
        ] {
            for c in s.chars().chain(s.to_uppercase().chars()) {
                assert_eq!(glyph(c), glyph(base), "{c} should look like {base}");
            }
        }
    }

    #[test]
    fn unknown_is_box() {
        assert_eq!(glyph('€'), BOX);
        assert_eq!(glyph('\u{4e2d}'), BOX);
    }

    #[test]
    fn width_math() {
        assert_eq!(text_width("", 3), 0);
        assert_eq!(text_width("CAM 1", 1), 30);
        assert_eq!(text_width("12:30", 2), 60);
        assert_eq!(text_width("Đường", 1), 30);
    }

    #[test]
    fn render_counts_and_bounds() {
        let bits: usize = glyph('1').iter().map(|r| r.count_ones() as usize).sum();
        let mut lit = Vec::new();
        render("1", 2, |x, y| lit.push((x, y)));
        assert_eq!(lit.len(), bits * 4);
        assert!(lit.iter().all(|&(x, y)| x < GLYPH_W * 2 && y < GLYPH_H * 2));
        // Top row of '1' is 0b00100: the centre column, 2x2 block at x 4..6, y 0..2.
        for p in [(4, 0), (5, 0), (4, 1), (5, 1)] {
            assert!(lit.contains(&p));
        }
        // Second glyph starts after the 1-column gap.
        let mut xs = Vec::new();
        render(" 1", 1, |x, _| xs.push(x));
        assert!(xs.iter().all(|&x| x > GLYPH_W));
        assert_eq!(xs.len(), bits);
    }
}
