//! A measurement's schema: each field once, with its line-protocol type and unit. Kinds
//! define theirs in `devices/<kind>/fields.rs`; the output writer, the conformance tests and
//! the dashboard tests read it from there. Names only ever get added: dashboards and users
//! depend on them.

/// A field's line-protocol type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    Float,
    Int,
    Bool,
    Str,
}

/// When a field is on a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    /// On every line.
    Always,
    /// Only when the device reports it (and it is plausible).
    Optional,
    /// A numbered family: `<key>_1`, `<key>_2`, ... (cells, sensors); as many as the device has.
    Numbered,
}

/// One field of a measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldSpec {
    /// The field key; for [`Presence::Numbered`] the family prefix (`cell` for `cell_7`).
    pub key: &'static str,
    pub ty: FieldType,
    /// Its unit as printed (`V`, `A`, `Ah`, `%`, `degC`), empty for counts, flags and text.
    pub unit: &'static str,
    pub presence: Presence,
}

impl FieldSpec {
    pub const fn new(key: &'static str, ty: FieldType, unit: &'static str) -> Self {
        FieldSpec {
            key,
            ty,
            unit,
            presence: Presence::Always,
        }
    }

    pub const fn optional(self) -> Self {
        FieldSpec {
            presence: Presence::Optional,
            ..self
        }
    }

    pub const fn numbered(self) -> Self {
        FieldSpec {
            presence: Presence::Numbered,
            ..self
        }
    }

    /// Whether a printed key is this field (or one of its numbered family).
    pub fn matches(&self, key: &str) -> bool {
        match self.presence {
            Presence::Numbered => key
                .strip_prefix(self.key)
                .and_then(|rest| rest.strip_prefix('_'))
                .is_some_and(|n| {
                    !n.is_empty() && !n.starts_with('0') && n.bytes().all(|b| b.is_ascii_digit())
                }),
            _ => key == self.key,
        }
    }
}

/// Rounds a derived value to `decimals`, so 15.6 V x -2.87 A prints -44.772, not
/// -44.772000000000006.
pub fn round(v: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (v * scale).round() / scale
}

/// One field value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    Float(f64),
    Int(i64),
    Bool(bool),
    Str(&'a str),
}

impl Value<'_> {
    pub fn ty(&self) -> FieldType {
        match self {
            Value::Float(_) => FieldType::Float,
            Value::Int(_) => FieldType::Int,
            Value::Bool(_) => FieldType::Bool,
            Value::Str(_) => FieldType::Str,
        }
    }
}

/// Where a reading's fields go: the line writer, or a list in tests.
pub trait Fields {
    /// Field `spec` (number `n`, 1-based, of a numbered family) has `value`.
    fn field(&mut self, spec: &FieldSpec, n: Option<usize>, value: Value<'_>);

    /// An unnumbered field.
    fn put(&mut self, spec: &FieldSpec, value: Value<'_>) {
        self.field(spec, None, value);
    }
}

/// Collects fields as (key, value) pairs: for tests and the `point` view.
impl Fields for Vec<(String, FieldValue)> {
    fn field(&mut self, spec: &FieldSpec, n: Option<usize>, value: Value<'_>) {
        let key = match n {
            Some(n) => format!("{}_{n}", spec.key),
            None => spec.key.to_string(),
        };
        self.push((key, FieldValue::from(value)));
    }
}

/// An owned field value.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue {
    Float(f64),
    Int(i64),
    Bool(bool),
    Str(String),
}

impl From<Value<'_>> for FieldValue {
    fn from(v: Value<'_>) -> Self {
        match v {
            Value::Float(x) => FieldValue::Float(x),
            Value::Int(x) => FieldValue::Int(x),
            Value::Bool(x) => FieldValue::Bool(x),
            Value::Str(x) => FieldValue::Str(x.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_numbered_family_matches_its_numbers_only() {
        let cell = FieldSpec::new("cell", FieldType::Float, "V").numbered();
        for yes in ["cell_1", "cell_16", "cell_32"] {
            assert!(cell.matches(yes), "{yes}");
        }
        for no in [
            "cell", "cell_", "cell_0", "cell_01", "cell_x", "cell_min", "cells_1",
        ] {
            assert!(!cell.matches(no), "{no}");
        }
        let voltage = FieldSpec::new("voltage", FieldType::Float, "V");
        assert!(voltage.matches("voltage"));
        assert!(!voltage.matches("voltage_1"));
    }
}
