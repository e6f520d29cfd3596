//! Parser of the selector expression form.
//!
//! ```text
//! expr  := or
//! or    := and ('||' and)*
//! and   := unary ('&&' unary)*
//! unary := '!' unary | '(' expr ')' | 'all()' | 'has(' key ')'
//!        | key '==' value | key '!=' value | key 'in' set | key 'not in' set
//! set   := '{' value (',' value)* '}'
//! value := 'single' or "double" quoted string
//! ```
//!
//! Whitespace is free between tokens. Errors carry the 1-based column (in
//! characters) inside the expression, so that callers can point into the
//! document the expression came from.

use std::collections::BTreeSet;

use super::Expr;
use crate::syntax;

/// A syntax error in a selector expression.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("selector column {column}: {message}")]
pub struct SelectorError {
    /// 1-based column (in characters) inside the expression.
    pub column: usize,
    /// What was expected and what was found.
    pub message: String,
}

/// One token and the column it starts at.
#[derive(Debug, Clone, PartialEq)]
struct Token {
    kind: Tok,
    column: usize,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    /// A bare word: a label key, or `all`, `has`, `in`, `not`.
    Word(String),
    /// A quoted string, quotes removed.
    Quoted(String),
    LParen,
    RParen,
    LBrace,
    RBrace,
    Comma,
    Bang,
    EqEq,
    NotEq,
    AndAnd,
    OrOr,
    End,
}

impl Tok {
    /// How the token reads in a message: `'web'`, `'&&'`, `the end of the selector`.
    fn describe(&self) -> String {
        match self {
            Tok::Word(w) => format!("'{w}'"),
            Tok::Quoted(v) => format!("the string '{v}'"),
            Tok::LParen => "'('".into(),
            Tok::RParen => "')'".into(),
            Tok::LBrace => "'{'".into(),
            Tok::RBrace => "'}'".into(),
            Tok::Comma => "','".into(),
            Tok::Bang => "'!'".into(),
            Tok::EqEq => "'=='".into(),
            Tok::NotEq => "'!='".into(),
            Tok::AndAnd => "'&&'".into(),
            Tok::OrOr => "'||'".into(),
            Tok::End => "the end of the selector".into(),
        }
    }
}

/// Characters of a bare word: everything a label key may hold (a derived
/// key such as `nslabel.palisade.dev/kubernetes.io/metadata.name` has two '/').
fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/')
}

fn error(column: usize, message: impl Into<String>) -> SelectorError {
    SelectorError {
        column,
        message: message.into(),
    }
}

fn tokenize(text: &str) -> Result<Vec<Token>, SelectorError> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let column = i + 1;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let next = chars.get(i + 1).copied();
        let (kind, len) = match (c, next) {
            ('(', _) => (Tok::LParen, 1),
            (')', _) => (Tok::RParen, 1),
            ('{', _) => (Tok::LBrace, 1),
            ('}', _) => (Tok::RBrace, 1),
            (',', _) => (Tok::Comma, 1),
            ('=', Some('=')) => (Tok::EqEq, 2),
            ('!', Some('=')) => (Tok::NotEq, 2),
            ('!', _) => (Tok::Bang, 1),
            ('&', Some('&')) => (Tok::AndAnd, 2),
            ('|', Some('|')) => (Tok::OrOr, 2),
            ('=', _) => return Err(error(column, "found '='; compare with '=='")),
            ('&', _) => return Err(error(column, "found '&'; write '&&' for 'and'")),
            ('|', _) => return Err(error(column, "found '|'; write '||' for 'or'")),
            ('\'' | '"', _) => {
                let end = chars[i + 1..].iter().position(|&q| q == c).ok_or_else(|| {
                    error(
                        column,
                        format!("the string starting here is not closed; end it with {c}"),
                    )
                })?;
                let value: String = chars[i + 1..i + 1 + end].iter().collect();
                (Tok::Quoted(value), end + 2)
            }
            _ if is_word_char(c) => {
                let len = chars[i..].iter().take_while(|&&w| is_word_char(w)).count();
                (Tok::Word(chars[i..i + len].iter().collect()), len)
            }
            _ => return Err(error(column, format!("unexpected character '{c}'"))),
        };
        tokens.push(Token { kind, column });
        i += len;
    }
    tokens.push(Token {
        kind: Tok::End,
        column: chars.len() + 1,
    });
    Ok(tokens)
}

/// Parses the expression form of a selector.
pub fn parse(text: &str) -> Result<Expr, SelectorError> {
    let tokens = tokenize(text)?;
    if tokens.len() == 1 {
        return Err(error(
            1,
            "the selector is empty; write all() to select every endpoint",
        ));
    }
    let mut parser = Parser { tokens, at: 0 };
    let expr = parser.or()?;
    let token = parser.peek();
    if token.kind != Tok::End {
        let expected = if token.kind == Tok::RParen {
            "found ')' without a matching '('".to_string()
        } else {
            format!(
                "expected '&&', '||' or the end of the selector, found {}",
                token.kind.describe()
            )
        };
        return Err(error(token.column, expected));
    }
    Ok(expr)
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> &Token {
        &self.tokens[self.at]
    }

    fn peek_kind_at(&self, offset: usize) -> &Tok {
        let i = (self.at + offset).min(self.tokens.len() - 1);
        &self.tokens[i].kind
    }

    fn next(&mut self) -> Token {
        let token = self.tokens[self.at].clone();
        if token.kind != Tok::End {
            self.at += 1;
        }
        token
    }

    /// Consumes `kind` or fails with "expected {what} {after}, found ...".
    fn expect(&mut self, kind: Tok, what: &str, after: &str) -> Result<(), SelectorError> {
        let token = self.next();
        if token.kind == kind {
            Ok(())
        } else {
            Err(error(
                token.column,
                format!("expected {what} {after}, found {}", token.kind.describe()),
            ))
        }
    }

    fn or(&mut self) -> Result<Expr, SelectorError> {
        let mut terms = vec![self.and()?];
        while self.peek().kind == Tok::OrOr {
            self.next();
            terms.push(self.and()?);
        }
        Ok(if terms.len() == 1 {
            terms.remove(0)
        } else {
            Expr::Or(terms)
        })
    }

    fn and(&mut self) -> Result<Expr, SelectorError> {
        let mut terms = vec![self.unary()?];
        while self.peek().kind == Tok::AndAnd {
            self.next();
            terms.push(self.unary()?);
        }
        Ok(if terms.len() == 1 {
            terms.remove(0)
        } else {
            Expr::And(terms)
        })
    }

    fn unary(&mut self) -> Result<Expr, SelectorError> {
        let token = self.next();
        match token.kind {
            Tok::Bang => Ok(Expr::Not(Box::new(self.unary()?))),
            Tok::LParen => {
                let inner = self.or()?;
                self.expect(Tok::RParen, "')'", "to close the '('")?;
                Ok(inner)
            }
            // `all` and `has` are functions only when a '(' follows; else label keys.
            Tok::Word(w) if w == "all" && *self.peek_kind_at(0) == Tok::LParen => {
                self.next();
                self.expect(Tok::RParen, "')'", "after 'all('")?;
                Ok(Expr::All)
            }
            Tok::Word(w) if w == "has" && *self.peek_kind_at(0) == Tok::LParen => {
                self.next();
                let key = self.key("after 'has('")?;
                self.expect(Tok::RParen, "')'", "after the key in 'has('")?;
                Ok(Expr::Has(key))
            }
            Tok::Word(key) => {
                check_key(&key, token.column)?;
                self.comparison(key)
            }
            other => Err(error(
                token.column,
                format!(
                    "expected a label key, '!', '(', all() or has(), found {}",
                    other.describe()
                ),
            )),
        }
    }

    fn key(&mut self, after: &str) -> Result<String, SelectorError> {
        let token = self.next();
        match token.kind {
            Tok::Word(key) => {
                check_key(&key, token.column)?;
                Ok(key)
            }
            other => Err(error(
                token.column,
                format!("expected a label key {after}, found {}", other.describe()),
            )),
        }
    }

    /// The operator and operand after a key.
    fn comparison(&mut self, key: String) -> Result<Expr, SelectorError> {
        let token = self.next();
        match token.kind {
            Tok::EqEq => Ok(Expr::Eq(key, self.value("after '=='")?)),
            Tok::NotEq => Ok(Expr::Ne(key, self.value("after '!='")?)),
            Tok::Word(w) if w == "in" => Ok(Expr::In(key, self.set("after 'in'")?)),
            Tok::Word(w) if w == "not" => {
                let next = self.next();
                if next.kind != Tok::Word("in".into()) {
                    return Err(error(
                        next.column,
                        format!("expected 'in' after 'not', found {}", next.kind.describe()),
                    ));
                }
                Ok(Expr::NotIn(key, self.set("after 'not in'")?))
            }
            other => Err(error(
                token.column,
                format!(
                    "expected '==', '!=', 'in' or 'not in' after the key '{key}', found {}",
                    other.describe()
                ),
            )),
        }
    }

    fn value(&mut self, after: &str) -> Result<String, SelectorError> {
        let token = self.next();
        match token.kind {
            Tok::Quoted(value) => {
                if let Err(why) = syntax::check_label_value(&value) {
                    return Err(error(token.column, why));
                }
                Ok(value)
            }
            other => Err(error(
                token.column,
                format!(
                    "expected a quoted value {after}, found {}",
                    other.describe()
                ),
            )),
        }
    }

    fn set(&mut self, after: &str) -> Result<BTreeSet<String>, SelectorError> {
        self.expect(Tok::LBrace, "'{'", after)?;
        let mut values = BTreeSet::new();
        loop {
            values.insert(self.value("in the set")?);
            let token = self.next();
            match token.kind {
                Tok::Comma => continue,
                Tok::RBrace => return Ok(values),
                other => {
                    return Err(error(
                        token.column,
                        format!(
                            "expected ',' or '}}' in the set, found {}",
                            other.describe()
                        ),
                    ))
                }
            }
        }
    }
}

/// Keys follow the label key syntax; a derived namespace-label key
/// (`nslabel.palisade.dev/` + key) is accepted so that canonical text of a
/// resolved selector parses back.
fn check_key(key: &str, column: usize) -> Result<(), SelectorError> {
    let plain = key
        .strip_prefix(crate::resource::NAMESPACE_LABELS_PREFIX)
        .unwrap_or(key);
    syntax::check_label_key(plain).map_err(|why| error(column, why))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(vs: &[&str]) -> BTreeSet<String> {
        vs.iter().map(|v| v.to_string()).collect()
    }

    fn eq(k: &str, v: &str) -> Expr {
        Expr::Eq(k.into(), v.into())
    }

    #[test]
    fn each_operator() {
        assert_eq!(parse("all()").unwrap(), Expr::All);
        assert_eq!(parse(" all ( ) ").unwrap(), Expr::All);
        assert_eq!(parse("has(app)").unwrap(), Expr::Has("app".into()));
        assert_eq!(parse("app == 'web'").unwrap(), eq("app", "web"));
        assert_eq!(parse("app==\"web\"").unwrap(), eq("app", "web"));
        assert_eq!(
            parse("app != 'web'").unwrap(),
            Expr::Ne("app".into(), "web".into())
        );
        assert_eq!(
            parse("tier in {'a', 'b'}").unwrap(),
            Expr::In("tier".into(), set(&["a", "b"]))
        );
        assert_eq!(
            parse("tier not in {'a'}").unwrap(),
            Expr::NotIn("tier".into(), set(&["a"]))
        );
        assert_eq!(
            parse("!has(x)").unwrap(),
            Expr::Not(Box::new(Expr::Has("x".into())))
        );
        assert_eq!(
            parse("app.kubernetes.io/name == ''").unwrap(),
            eq("app.kubernetes.io/name", "")
        );
    }

    #[test]
    fn keywords_are_keys_where_no_parenthesis_follows() {
        assert_eq!(parse("all == 'x'").unwrap(), eq("all", "x"));
        assert_eq!(parse("has == 'x'").unwrap(), eq("has", "x"));
        assert_eq!(
            parse("not in {'x'}").unwrap(),
            Expr::In("not".into(), set(&["x"]))
        );
        assert_eq!(
            parse("in not in {'x'}").unwrap(),
            Expr::NotIn("in".into(), set(&["x"]))
        );
    }

    #[test]
    fn precedence_bang_then_and_then_or() {
        // a || b && !c  ==  a || (b && (!c))
        let e = parse("a == '1' || b == '2' && !c == '3'").unwrap();
        assert_eq!(
            e,
            Expr::Or(vec![
                eq("a", "1"),
                Expr::And(vec![eq("b", "2"), Expr::Not(Box::new(eq("c", "3")))]),
            ])
        );
        // !a && b  ==  (!a) && b
        let e = parse("!has(a) && has(b)").unwrap();
        assert_eq!(
            e,
            Expr::And(vec![
                Expr::Not(Box::new(Expr::Has("a".into()))),
                Expr::Has("b".into())
            ])
        );
    }

    #[test]
    fn parentheses_group() {
        let e = parse("(a == '1' || b == '2') && c == '3'").unwrap();
        assert_eq!(
            e,
            Expr::And(vec![
                Expr::Or(vec![eq("a", "1"), eq("b", "2")]),
                eq("c", "3")
            ])
        );
        let e = parse("!(a == '1' && b == '2')").unwrap();
        assert_eq!(
            e,
            Expr::Not(Box::new(Expr::And(vec![eq("a", "1"), eq("b", "2")])))
        );
    }

    fn err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn error_columns_and_messages() {
        assert_eq!(
            err("app == 'x' && role == web"),
            "selector column 23: expected a quoted value after '==', found 'web'"
        );
        assert_eq!(
            err("app = 'x'"),
            "selector column 5: found '='; compare with '=='"
        );
        assert_eq!(
            err("app == 'x"),
            "selector column 8: the string starting here is not closed; end it with '"
        );
        assert_eq!(
            err("(app == 'x'"),
            "selector column 12: expected ')' to close the '(', found the end of the selector"
        );
        assert_eq!(
            err("app == 'x')"),
            "selector column 11: found ')' without a matching '('"
        );
        assert_eq!(
            err("app == 'x' role == 'y'"),
            "selector column 12: expected '&&', '||' or the end of the selector, found 'role'"
        );
        assert_eq!(
            err("app"),
            "selector column 4: expected '==', '!=', 'in' or 'not in' after the key 'app', found the end of the selector"
        );
        assert_eq!(
            err("x in {'a' 'b'}"),
            "selector column 11: expected ',' or '}' in the set, found the string 'b'"
        );
        assert_eq!(
            err("x in 'a'"),
            "selector column 6: expected '{' after 'in', found the string 'a'"
        );
        assert_eq!(
            err("x not 'a'"),
            "selector column 7: expected 'in' after 'not', found the string 'a'"
        );
        assert_eq!(
            err("  "),
            "selector column 1: the selector is empty; write all() to select every endpoint"
        );
        assert_eq!(
            err("&& x"),
            "selector column 1: expected a label key, '!', '(', all() or has(), found '&&'"
        );
        assert!(err("-bad == 'x'").starts_with("selector column 1: label key '-bad' is not valid"));
        assert!(err("x == 'a b'").starts_with("selector column 6: label value 'a b' is not valid"));
        assert_eq!(
            err("a & b"),
            "selector column 3: found '&'; write '&&' for 'and'"
        );
    }
}
