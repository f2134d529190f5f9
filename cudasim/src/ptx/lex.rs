//! Splitting PTX text into tokens, each with its 1-based line.

#[derive(Clone, Debug, PartialEq)]
pub enum Tok {
    /// An identifier, opcode, directive or register name, dots included: `ld.global.f32`,
    /// `.reg`, `%tid.x`, `$L__BB0_2`, `_ZZ8sum_rowsE1s`.
    Word(String),
    /// Anything that starts with a digit: `42`, `0x1F`, `0f3F800000`, `0d3FF0000000000000`.
    Num(String),
    /// A quoted string (`.pragma "nounroll"`).
    Str(String),
    /// One punctuation character.
    P(char),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Token {
    pub tok: Tok,
    pub line: u32,
}

fn word_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == '$' || c == '%' || c == '.'
}

fn word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '$' || c == '.'
}

/// Tokenize PTX text. Comments (`//` and `/* */`) are dropped. An unexpected character is an
/// error naming its line.
pub fn tokenize(text: &str) -> Result<Vec<Token>, (u32, String)> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut line = 1u32;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if c == '/' && chars.get(i + 1) == Some(&'/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && chars.get(i + 1) == Some(&'*') {
            i += 2;
            while i < chars.len() && !(chars[i] == '*' && chars.get(i + 1) == Some(&'/')) {
                if chars[i] == '\n' {
                    line += 1;
                }
                i += 1;
            }
            i += 2;
        } else if c == '"' {
            let start = i + 1;
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += 1;
            }
            out.push(Token {
                tok: Tok::Str(chars[start..i.min(chars.len())].iter().collect()),
                line,
            });
            i += 1;
        } else if word_start(c) {
            let start = i;
            i += 1;
            while i < chars.len() {
                if word_char(chars[i]) {
                    i += 1;
                } else if chars[i] == ':' && chars.get(i + 1) == Some(&':') {
                    i += 2; // `L1::no_allocate`-style qualifiers stay in the word
                } else {
                    break;
                }
            }
            out.push(Token {
                tok: Tok::Word(chars[start..i].iter().collect()),
                line,
            });
        } else if c.is_ascii_digit() {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
            out.push(Token {
                tok: Tok::Num(chars[start..i].iter().collect()),
                line,
            });
        } else if ",;:()[]{}<>+-|!@=".contains(c) {
            out.push(Token { tok: Tok::P(c), line });
            i += 1;
        } else {
            return Err((line, format!("unexpected character {c:?}")));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens() {
        let t = tokenize("ld.global.nc.f32 %f1, [%rd16+-128]; // c\n$L__BB0_2:\n.pragma \"nounroll\";").unwrap();
        let kinds: Vec<Tok> = t.iter().map(|t| t.tok.clone()).collect();
        assert_eq!(
            kinds,
            vec![
                Tok::Word("ld.global.nc.f32".into()),
                Tok::Word("%f1".into()),
                Tok::P(','),
                Tok::P('['),
                Tok::Word("%rd16".into()),
                Tok::P('+'),
                Tok::P('-'),
                Tok::Num("128".into()),
                Tok::P(']'),
                Tok::P(';'),
                Tok::Word("$L__BB0_2".into()),
                Tok::P(':'),
                Tok::Word(".pragma".into()),
                Tok::Str("nounroll".into()),
                Tok::P(';'),
            ]
        );
        assert_eq!(t[10].line, 2);
        assert_eq!(t[12].line, 3);
    }
}
