//! The Kubernetes LabelSelector object (`matchLabels`, `matchExpressions`)
//! and its translation to an `Expr`: the same `Expr` the expression form of
//! the same selector parses to.

use super::Expr;

/// A Kubernetes LabelSelector: every `match_labels` pair and every
/// requirement must hold. Empty selects everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    /// `key: value` pairs, in the order written.
    pub match_labels: Vec<(String, String)>,
    /// Set-based requirements, in the order written.
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

/// One entry of `matchExpressions`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelSelectorRequirement {
    /// The label key the requirement is about.
    pub key: String,
    /// How the key's value is tested.
    pub operator: LabelSelectorOperator,
    /// Non-empty for `In`/`NotIn`, empty for `Exists`/`DoesNotExist`.
    pub values: Vec<String>,
}

/// Operators of `matchExpressions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelSelectorOperator {
    /// The key is present with one of the values.
    In,
    /// The key is absent or has none of the values.
    NotIn,
    /// The key is present.
    Exists,
    /// The key is absent.
    DoesNotExist,
}

impl LabelSelectorOperator {
    /// All operators, as written in YAML.
    pub const NAMES: [&'static str; 4] = ["In", "NotIn", "Exists", "DoesNotExist"];

    /// The operator for its YAML name.
    pub fn from_name(name: &str) -> Option<LabelSelectorOperator> {
        match name {
            "In" => Some(LabelSelectorOperator::In),
            "NotIn" => Some(LabelSelectorOperator::NotIn),
            "Exists" => Some(LabelSelectorOperator::Exists),
            "DoesNotExist" => Some(LabelSelectorOperator::DoesNotExist),
            _ => None,
        }
    }
}

impl LabelSelector {
    /// The equivalent expression: `k == 'v'` per label, `k in {..}`,
    /// `k not in {..}`, `has(k)`, `!has(k)` per requirement, joined by `&&`.
    pub fn to_expr(&self) -> Expr {
        let labels = self
            .match_labels
            .iter()
            .map(|(k, v)| Expr::Eq(k.clone(), v.clone()));
        let requirements = self.match_expressions.iter().map(|r| {
            let values = r.values.iter().cloned().collect();
            match r.operator {
                LabelSelectorOperator::In => Expr::In(r.key.clone(), values),
                LabelSelectorOperator::NotIn => Expr::NotIn(r.key.clone(), values),
                LabelSelectorOperator::Exists => Expr::Has(r.key.clone()),
                LabelSelectorOperator::DoesNotExist => {
                    Expr::Not(Box::new(Expr::Has(r.key.clone())))
                }
            }
        });
        Expr::and(labels.chain(requirements))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn translation_matches_the_expression_form() {
        let ls = LabelSelector {
            match_labels: vec![("app".into(), "web".into())],
            match_expressions: vec![
                LabelSelectorRequirement {
                    key: "tier".into(),
                    operator: LabelSelectorOperator::In,
                    values: vec!["b".into(), "a".into()],
                },
                LabelSelectorRequirement {
                    key: "env".into(),
                    operator: LabelSelectorOperator::NotIn,
                    values: vec!["dev".into()],
                },
                LabelSelectorRequirement {
                    key: "x".into(),
                    operator: LabelSelectorOperator::Exists,
                    values: vec![],
                },
                LabelSelectorRequirement {
                    key: "y".into(),
                    operator: LabelSelectorOperator::DoesNotExist,
                    values: vec![],
                },
            ],
        };
        let text = "app == 'web' && tier in {'a','b'} && env not in {'dev'} && has(x) && !has(y)";
        assert_eq!(ls.to_expr(), Expr::parse(text).unwrap());
        assert_eq!(LabelSelector::default().to_expr(), Expr::All);
    }
}
