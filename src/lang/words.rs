//! The language's own words, in one list: statement keywords, the keywords that only
//! follow a statement's keyword, the constant `pi` and the built-in functions
//! (docs/language.md "Expressions": reserved are `pi`, function names and statement
//! keywords). The checker reads it to refuse a reserved word as a name, the
//! parser to suggest a misspelt statement keyword; a test holds it against the
//! grammar's keyword rules and the tape's function names.

/// What a word of the language is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WordKind {
    /// Starts a statement (`param`, `minimize`, …): reserved.
    Statement,
    /// A keyword only in its place inside a statement (`noise sd`, `escape when`,
    /// `var w ~ normal(…)`). Not reserved: the grammar reads it as a keyword in that
    /// place only, so files may use these words as names elsewhere.
    Clause,
    /// The constant π: reserved.
    Constant,
    /// A built-in function (`exp`, …, and `pow`, `max`, `min`, `mean`, `sum`, `prod`,
    /// `logsumexp`, which take other than one plain argument): reserved.
    Function,
}

/// Every word of the language, statement keywords first in the order the parser
/// offers them as suggestions. (The `sampling` modes are not listed: they hold `-`, so
/// no name can collide with them.)
pub const WORDS: &[(&str, WordKind)] = &[
    ("param", WordKind::Statement),
    ("var", WordKind::Statement),
    ("let", WordKind::Statement),
    ("minimize", WordKind::Statement),
    ("noise", WordKind::Statement),
    ("observe", WordKind::Statement),
    ("data", WordKind::Statement),
    ("batch", WordKind::Statement),
    ("sampling", WordKind::Statement),
    ("escape", WordKind::Statement),
    ("sd", WordKind::Clause),
    ("diag", WordKind::Clause),
    ("cov", WordKind::Clause),
    ("when", WordKind::Clause),
    ("normal", WordKind::Clause),
    ("uniform", WordKind::Clause),
    ("pi", WordKind::Constant),
    ("exp", WordKind::Function),
    ("log", WordKind::Function),
    ("sqrt", WordKind::Function),
    ("sin", WordKind::Function),
    ("cos", WordKind::Function),
    ("tan", WordKind::Function),
    ("tanh", WordKind::Function),
    ("sinh", WordKind::Function),
    ("cosh", WordKind::Function),
    ("atan", WordKind::Function),
    ("sigmoid", WordKind::Function),
    ("softplus", WordKind::Function),
    ("log1p", WordKind::Function),
    ("expm1", WordKind::Function),
    ("abs", WordKind::Function),
    ("relu", WordKind::Function),
    ("pow", WordKind::Function),
    ("max", WordKind::Function),
    ("min", WordKind::Function),
    ("mean", WordKind::Function),
    ("sum", WordKind::Function),
    ("prod", WordKind::Function),
    ("logsumexp", WordKind::Function),
];

/// The reserved kind of `name`: a statement keyword, `pi` or a built-in function; `None`
/// for any other name (clause keywords included).
pub fn reserved(name: &str) -> Option<WordKind> {
    WORDS
        .iter()
        .find(|(w, k)| *w == name && *k != WordKind::Clause)
        .map(|&(_, k)| k)
}

/// The words of one kind, in list order.
pub fn words(kind: WordKind) -> impl Iterator<Item = &'static str> {
    WORDS
        .iter()
        .filter(move |(_, k)| *k == kind)
        .map(|&(w, _)| w)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tape::Func;
    use std::collections::BTreeSet;

    const GRAMMAR: &str = include_str!("../../grammar/hasme.pest");

    /// `NAME = … { … }` rules of the grammar, as (name, body) pairs.
    fn rules() -> Vec<(&'static str, &'static str)> {
        GRAMMAR
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .filter_map(|l| {
                let (name, body) = l.split_once('=')?;
                let name = name.trim();
                let body = body.trim();
                (!name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
                    .then_some((name, body))
            })
            .collect()
    }

    /// The quoted words of a rule body.
    fn quoted(body: &str) -> Vec<&str> {
        body.split('"').skip(1).step_by(2).collect()
    }

    #[test]
    fn the_keywords_are_the_grammars() {
        let rules = rules();
        // `kw_NAME = @{ "NAME" ~ !ident_char }`: every keyword of the grammar.
        let mut keywords = BTreeSet::new();
        for (name, body) in &rules {
            if let Some(word) = name.strip_prefix("kw_") {
                assert_eq!(quoted(body), [word], "rule {name} spells its own word");
                keywords.insert(word);
            }
        }
        // A statement keyword starts a `*_stmt` rule; the others are clauses.
        let statements: BTreeSet<&str> = rules
            .iter()
            .filter(|(name, _)| name.ends_with("_stmt"))
            .filter_map(|(_, body)| {
                let first = body
                    .trim_start_matches(['{', ' '])
                    .split_whitespace()
                    .next()?;
                first.strip_prefix("kw_")
            })
            .collect();
        let clauses: BTreeSet<&str> = keywords.difference(&statements).copied().collect();
        assert_eq!(
            words(WordKind::Statement).collect::<BTreeSet<_>>(),
            statements
        );
        assert_eq!(words(WordKind::Clause).collect::<BTreeSet<_>>(), clauses);
        // `sum`, `prod` and `logsumexp` are grammar words too (`reduce_kind`), and
        // functions here.
        let (_, reduce) = rules
            .iter()
            .find(|(n, _)| *n == "reduce_kind")
            .expect("rule");
        for word in quoted(reduce) {
            assert_eq!(reserved(word), Some(WordKind::Function), "{word}");
        }
    }

    #[test]
    fn the_functions_are_the_tapes_and_the_checkers() {
        let listed: BTreeSet<&str> = words(WordKind::Function).collect();
        let mut known: BTreeSet<&str> = Func::ALL.iter().map(|f| f.name()).collect();
        // Compiled by the checker itself rather than as one tape function.
        known.extend(["pow", "max", "min", "mean", "sum", "prod", "logsumexp"]);
        assert_eq!(listed, known);
        assert_eq!(words(WordKind::Constant).collect::<Vec<_>>(), ["pi"]);
    }

    #[test]
    fn each_word_is_listed_once_and_clauses_are_not_reserved() {
        let all: BTreeSet<&str> = WORDS.iter().map(|(w, _)| *w).collect();
        assert_eq!(all.len(), WORDS.len());
        assert_eq!(reserved("sd"), None);
        assert_eq!(reserved("when"), None);
        assert_eq!(reserved("normal"), None);
        assert_eq!(reserved("relu"), Some(WordKind::Function));
        assert_eq!(reserved("param"), Some(WordKind::Statement));
        assert_eq!(reserved("x"), None);
    }
}
