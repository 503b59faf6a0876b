//! Evaluation of compiled `when` rules over claims (JWT claims or an opaque source's row).
//! Pure. Claim names are top-level keys; equality is typed (a string never equals a number) but
//! numbers compare by value, so `1` equals `1.0`.

use serde_json::{Map, Value};

use super::When;

impl When {
    /// Whether the rule holds over `claims`. Empty `All` holds; empty `Any` does not.
    pub fn holds(&self, claims: &Map<String, Value>) -> bool {
        match self {
            When::Present { claim } => claims.get(claim).is_some_and(|v| !v.is_null()),
            When::Equals { claim, value } => claims.get(claim).is_some_and(|v| scalar_eq(v, value)),
            When::OneOf { claim, values } => claims
                .get(claim)
                .is_some_and(|v| values.iter().any(|w| scalar_eq(v, w))),
            When::All(rules) => rules.iter().all(|r| r.holds(claims)),
            When::Any(rules) => rules.iter().any(|r| r.holds(claims)),
        }
    }
}

/// String, number and bool equality; anything else (null, arrays, objects) never matches.
fn scalar_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::String(x), Value::String(y)) => x == y,
        (Value::Bool(x), Value::Bool(y)) => x == y,
        (Value::Number(x), Value::Number(y)) => {
            if let (Some(x), Some(y)) = (x.as_i64(), y.as_i64()) {
                x == y
            } else if let (Some(x), Some(y)) = (x.as_u64(), y.as_u64()) {
                x == y
            } else {
                x.as_f64() == y.as_f64()
            }
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn present(c: &str) -> When {
        When::Present { claim: c.into() }
    }
    fn equals(c: &str, v: Value) -> When {
        When::Equals {
            claim: c.into(),
            value: v,
        }
    }

    #[test]
    fn when_table() {
        let claims = json!({
            "s": "agent", "n": 1, "f": 2.5, "b": true, "nul": null, "arr": ["x"], "big": u64::MAX
        });
        let claims = claims.as_object().cloned().unwrap_or_default();
        let cases: Vec<(&str, When, bool)> = vec![
            ("present string", present("s"), true),
            ("present null is absent", present("nul"), false),
            ("present missing", present("zz"), false),
            ("equals string", equals("s", json!("agent")), true),
            ("equals string mismatch", equals("s", json!("human")), false),
            ("int equals float", equals("n", json!(1.0)), true),
            ("float equals", equals("f", json!(2.5)), true),
            ("string never equals number", equals("n", json!("1")), false),
            ("bool equals", equals("b", json!(true)), true),
            ("bool mismatch", equals("b", json!(false)), false),
            ("big u64 equals", equals("big", json!(u64::MAX)), true),
            ("null never equals", equals("nul", Value::Null), false),
            ("array never equals", equals("arr", json!(["x"])), false),
            ("equals missing", equals("zz", json!("agent")), false),
            (
                "one_of hit",
                When::OneOf {
                    claim: "s".into(),
                    values: vec![json!("a"), json!("agent")],
                },
                true,
            ),
            (
                "one_of miss",
                When::OneOf {
                    claim: "s".into(),
                    values: vec![json!("a")],
                },
                false,
            ),
            (
                "one_of empty",
                When::OneOf {
                    claim: "s".into(),
                    values: vec![],
                },
                false,
            ),
            ("all empty holds", When::All(vec![]), true),
            ("any empty fails", When::Any(vec![]), false),
            (
                "all both",
                When::All(vec![present("s"), present("b")]),
                true,
            ),
            (
                "all one fails",
                When::All(vec![present("s"), present("zz")]),
                false,
            ),
            (
                "any one holds",
                When::Any(vec![present("zz"), present("s")]),
                true,
            ),
            (
                "any none holds",
                When::Any(vec![present("zz"), present("nul")]),
                false,
            ),
            (
                "nested",
                When::Any(vec![When::All(vec![present("s"), equals("n", json!(1))])]),
                true,
            ),
        ];
        for (name, rule, want) in cases {
            assert_eq!(rule.holds(&claims), want, "{name}");
        }
    }
}
