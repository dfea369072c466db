//! Products: public chemical properties and the confidential manufacturing
//! process record.
//!
//! `ProductDraft` is what callers send (unknown fields rejected); `validate`
//! turns it into a `Product`, the only form the store ever receives.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::cas::Cas;

pub const MAX_NAME_CHARS: usize = 400;
pub const MAX_SYNONYMS: usize = 32;
pub const MAX_FORMULA_CHARS: usize = 100;
pub const MAX_SMILES_CHARS: usize = 2_000;
pub const MAX_IUPAC_CHARS: usize = 1_000;
pub const MAX_MOLECULAR_WEIGHT: f64 = 1_000_000.0;

/// A field that failed validation, with a message safe to show to callers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError { field: field.into(), message: message.into() }
    }
}

/// A product's public record, as stored and as served.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Product {
    pub cas: Cas,
    pub name: String,
    #[serde(default)]
    pub synonyms: Vec<String>,
    pub molecular_formula: String,
    pub molecular_weight: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smiles: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inchikey: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iupac_name: Option<String>,
}

/// The body of `PUT /v1/products/{cas}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProductDraft {
    /// Optional; when present it must name the same substance as the path.
    #[serde(default)]
    pub cas: Option<String>,
    pub name: String,
    #[serde(default)]
    pub synonyms: Vec<String>,
    pub molecular_formula: String,
    pub molecular_weight: f64,
    #[serde(default)]
    pub smiles: Option<String>,
    #[serde(default)]
    pub inchikey: Option<String>,
    #[serde(default)]
    pub iupac_name: Option<String>,
    /// Replaces the confidential record when present; left unchanged when absent.
    #[serde(default)]
    pub manufacturing: Option<ManufacturingProcess>,
}

impl ProductDraft {
    pub fn validate(self, cas: Cas) -> Result<(Product, Option<ManufacturingProcess>), FieldError> {
        if let Some(body_cas) = &self.cas {
            let parsed = Cas::parse(body_cas).map_err(|e| FieldError::new("cas", e.to_string()))?;
            if parsed != cas {
                return Err(FieldError::new("cas", "does not match the CAS number in the path"));
            }
        }
        let name = clean_text("name", &self.name, MAX_NAME_CHARS)?;
        if self.synonyms.len() > MAX_SYNONYMS {
            return Err(FieldError::new("synonyms", format!("at most {MAX_SYNONYMS} synonyms")));
        }
        let mut synonyms = Vec::with_capacity(self.synonyms.len());
        for (i, s) in self.synonyms.iter().enumerate() {
            let s = clean_text(&format!("synonyms[{i}]"), s, MAX_NAME_CHARS)?;
            if s.to_lowercase() != name.to_lowercase() && !synonyms.contains(&s) {
                synonyms.push(s);
            }
        }
        let molecular_formula = validate_formula(&self.molecular_formula)?;
        let w = self.molecular_weight;
        if !(w.is_finite() && w > 0.0 && w <= MAX_MOLECULAR_WEIGHT) {
            return Err(FieldError::new(
                "molecular_weight",
                format!("must be a number above 0 and at most {MAX_MOLECULAR_WEIGHT}"),
            ));
        }
        let smiles = optional(self.smiles, |s| validate_smiles(&s))?;
        let inchikey = optional(self.inchikey, |s| validate_inchikey(&s))?;
        let iupac_name = optional(self.iupac_name, |s| clean_text("iupac_name", &s, MAX_IUPAC_CHARS))?;
        let manufacturing = match self.manufacturing {
            Some(m) => Some(m.validate()?),
            None => None,
        };
        let product = Product {
            cas,
            name,
            synonyms,
            molecular_formula,
            molecular_weight: w,
            smiles,
            inchikey,
            iupac_name,
        };
        Ok((product, manufacturing))
    }
}

fn optional<F>(value: Option<String>, check: F) -> Result<Option<String>, FieldError>
where
    F: FnOnce(String) -> Result<String, FieldError>,
{
    value.map(check).transpose()
}

/// Trims, refuses empty text, control characters and over-long text.
pub fn clean_text(field: &str, text: &str, max_chars: usize) -> Result<String, FieldError> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(FieldError::new(field, "must not be empty"));
    }
    if trimmed.chars().count() > max_chars {
        return Err(FieldError::new(field, format!("must be at most {max_chars} characters")));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(FieldError::new(field, "must not contain control characters"));
    }
    Ok(trimmed.to_string())
}

/// Molecular formulas as PubChem writes them: element symbols with counts,
/// plus charges, isotope brackets, parentheses and dots for salts.
pub fn validate_formula(text: &str) -> Result<String, FieldError> {
    let field = "molecular_formula";
    let allowed = |c: char| c.is_ascii_alphanumeric() || "()[]+-.".contains(c);
    if text.is_empty() || text.len() > MAX_FORMULA_CHARS {
        return Err(FieldError::new(field, format!("must be 1 to {MAX_FORMULA_CHARS} characters")));
    }
    if !text.chars().all(allowed) || !text.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(FieldError::new(field, "must be a molecular formula such as C9H8O4"));
    }
    Ok(text.to_string())
}

fn validate_smiles(text: &str) -> Result<String, FieldError> {
    let printable = text.bytes().all(|b| (0x21..0x7f).contains(&b));
    if text.is_empty() || text.len() > MAX_SMILES_CHARS || !printable {
        return Err(FieldError::new(
            "smiles",
            format!("must be 1 to {MAX_SMILES_CHARS} printable ASCII characters without spaces"),
        ));
    }
    Ok(text.to_string())
}

/// Standard InChIKey: 14 letters, hyphen, 10 letters, hyphen, 1 letter.
pub fn validate_inchikey(text: &str) -> Result<String, FieldError> {
    let b = text.as_bytes();
    let upper = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_uppercase);
    let ok =
        b.len() == 27 && b[14] == b'-' && b[25] == b'-' && upper(0..14) && upper(15..25) && upper(26..27);
    if ok {
        Ok(text.to_string())
    } else {
        Err(FieldError::new("inchikey", "must be a standard InChIKey such as BSYNRYMUTXBXSQ-UHFFFAOYSA-N"))
    }
}

/// One step of a manufacturing route. Confidential: `Debug` shows only the
/// step number.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessStep {
    pub step: u32,
    pub operation: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<String>,
}

/// One release specification of the finished ingredient. Confidential.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Specification {
    pub test: String,
    pub limit: String,
}

/// The confidential manufacturing-process record. Only ever stored encrypted,
/// and its `Debug` output shows the shape, never the text, so it cannot reach
/// a log line by accident.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManufacturingProcess {
    pub route: String,
    pub site: String,
    pub steps: Vec<ProcessStep>,
    #[serde(default)]
    pub specifications: Vec<Specification>,
    /// Set on generated demonstration data so nobody mistakes it for a real process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notice: Option<String>,
}

impl fmt::Debug for ProcessStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProcessStep {{ step: {}, [redacted] }}", self.step)
    }
}

impl fmt::Debug for Specification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Specification([redacted])")
    }
}

impl fmt::Debug for ManufacturingProcess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ManufacturingProcess {{ [redacted]: {} steps, {} specifications }}",
            self.steps.len(),
            self.specifications.len()
        )
    }
}

pub const MAX_PROCESS_STEPS: usize = 50;
pub const MAX_SPECIFICATIONS: usize = 50;
const MAX_PROCESS_TEXT: usize = 2_000;

impl ManufacturingProcess {
    pub fn validate(self) -> Result<Self, FieldError> {
        let f = |name: &str| format!("manufacturing.{name}");
        let route = clean_text(&f("route"), &self.route, MAX_PROCESS_TEXT)?;
        let site = clean_text(&f("site"), &self.site, MAX_NAME_CHARS)?;
        if self.steps.is_empty() || self.steps.len() > MAX_PROCESS_STEPS {
            return Err(FieldError::new(f("steps"), format!("must have 1 to {MAX_PROCESS_STEPS} steps")));
        }
        let mut steps = Vec::with_capacity(self.steps.len());
        for (i, s) in self.steps.into_iter().enumerate() {
            if s.step as usize != i + 1 {
                return Err(FieldError::new(f(&format!("steps[{i}].step")), format!("must be {}", i + 1)));
            }
            let operation = clean_text(&f(&format!("steps[{i}].operation")), &s.operation, MAX_PROCESS_TEXT)?;
            let conditions = optional(s.conditions, |c| {
                clean_text(&f(&format!("steps[{i}].conditions")), &c, MAX_PROCESS_TEXT)
            })?;
            steps.push(ProcessStep { step: s.step, operation, conditions });
        }
        if self.specifications.len() > MAX_SPECIFICATIONS {
            return Err(FieldError::new(f("specifications"), format!("at most {MAX_SPECIFICATIONS}")));
        }
        let mut specifications = Vec::with_capacity(self.specifications.len());
        for (i, s) in self.specifications.into_iter().enumerate() {
            let test = clean_text(&f(&format!("specifications[{i}].test")), &s.test, MAX_NAME_CHARS)?;
            let limit = clean_text(&f(&format!("specifications[{i}].limit")), &s.limit, MAX_NAME_CHARS)?;
            specifications.push(Specification { test, limit });
        }
        let notice = optional(self.notice, |n| clean_text(&f("notice"), &n, MAX_NAME_CHARS))?;
        Ok(ManufacturingProcess { route, site, steps, specifications, notice })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft() -> ProductDraft {
        serde_json::from_value(serde_json::json!({
            "name": "acetylsalicylic acid",
            "synonyms": ["aspirin", "Aspirin", "ACETYLSALICYLIC ACID"],
            "molecular_formula": "C9H8O4",
            "molecular_weight": 180.15742,
            "smiles": "CC(=O)Oc1ccccc1C(=O)O",
            "inchikey": "BSYNRYMUTXBXSQ-UHFFFAOYSA-N"
        }))
        .unwrap()
    }

    fn cas() -> Cas {
        Cas::parse("50-78-2").unwrap()
    }

    #[test]
    fn valid_draft_becomes_a_product_with_deduplicated_synonyms() {
        let (p, m) = draft().validate(cas()).unwrap();
        assert_eq!(p.synonyms, vec!["aspirin".to_string(), "Aspirin".to_string()]);
        assert_eq!(p.cas.to_string(), "50-78-2");
        assert!(m.is_none());
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let err = serde_json::from_value::<ProductDraft>(serde_json::json!({
            "name": "x", "molecular_formula": "C", "molecular_weight": 1.0, "price": 3
        }))
        .unwrap_err();
        assert!(err.to_string().contains("unknown field `price`"), "{err}");
    }

    #[test]
    fn body_cas_must_match_path_cas() {
        let mut d = draft();
        d.cas = Some("0050-78-2".into());
        assert!(d.validate(cas()).is_ok());
        let mut d = draft();
        d.cas = Some("64-17-5".into());
        assert_eq!(d.validate(cas()).unwrap_err().field, "cas");
    }

    type Change = Box<dyn Fn(&mut ProductDraft)>;

    #[test]
    fn each_bad_field_is_named() {
        let cases: Vec<(&str, Change)> = vec![
            ("name", Box::new(|d| d.name = "  ".into())),
            ("name", Box::new(|d| d.name = "x".repeat(401))),
            ("name", Box::new(|d| d.name = "a\u{0}b".into())),
            ("synonyms", Box::new(|d| d.synonyms = vec!["s".into(); 33])),
            ("synonyms[1]", Box::new(|d| d.synonyms = vec!["a".into(), "".into()])),
            ("molecular_formula", Box::new(|d| d.molecular_formula = "c9h8o4".into())),
            ("molecular_formula", Box::new(|d| d.molecular_formula = "C9 H8".into())),
            ("molecular_weight", Box::new(|d| d.molecular_weight = -1.0)),
            ("molecular_weight", Box::new(|d| d.molecular_weight = 0.0)),
            ("molecular_weight", Box::new(|d| d.molecular_weight = 2e6)),
            ("smiles", Box::new(|d| d.smiles = Some("C C".into()))),
            ("inchikey", Box::new(|d| d.inchikey = Some("BSYNRYMUTXBXSQ-UHFFFAOYSA".into()))),
            ("inchikey", Box::new(|d| d.inchikey = Some("bsynrymutxbxsq-uhffffaoysa-n".into()))),
        ];
        for (field, change) in cases {
            let mut d = draft();
            change(&mut d);
            assert_eq!(d.validate(cas()).unwrap_err().field, field);
        }
    }

    #[test]
    fn formulas_with_charges_isotopes_and_salts_are_accepted() {
        for f in ["C7H7KO2P+", "H4NO3[15N]", "C14H10Cl2NNaO2", "C10H18ClN", "CLi2O3", "C2H6O.ClH"] {
            assert_eq!(validate_formula(f).unwrap(), f);
        }
    }

    #[test]
    fn manufacturing_steps_must_be_numbered_in_order() {
        let m: ManufacturingProcess = serde_json::from_value(serde_json::json!({
            "route": "r", "site": "s",
            "steps": [{"step": 1, "operation": "a"}, {"step": 3, "operation": "b"}]
        }))
        .unwrap();
        assert_eq!(m.validate().unwrap_err().field, "manufacturing.steps[1].step");
    }

    #[test]
    fn debug_output_never_shows_manufacturing_text() {
        let draft: ProductDraft = serde_json::from_value(serde_json::json!({
            "name": "x", "molecular_formula": "H2O", "molecular_weight": 18.0,
            "manufacturing": {
                "route": "secret route text", "site": "secret site",
                "steps": [{"step": 1, "operation": "secret operation", "conditions": "secret conditions"}],
                "specifications": [{"test": "secret test", "limit": "secret limit"}]
            }
        }))
        .unwrap();
        let shown = format!("{draft:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("ManufacturingProcess { [redacted]: 1 steps, 1 specifications }"), "{shown}");
    }
}
