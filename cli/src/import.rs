//! Catalog import from TSV files shaped like the seed file: a header line
//! naming the columns, then one product per line.
//!
//! Columns: `cas`, `name` (or `common_name`), `molecular_formula`,
//! `molecular_weight` are required; `synonyms` (separated by `|`), `smiles`,
//! `inchikey`, `iupac_name` are optional; any other column is refused.
//! Every row goes through the same validation as the API. Importing the same
//! file twice changes nothing the second time.

use std::collections::HashMap;

use pharmagate_shared::domain::{Cas, Product, ProductDraft};
use pharmagate_shared::repo::{CatalogRepo, PutOutcome, RepoError};

const REQUIRED: [&str; 4] = ["cas", "name", "molecular_formula", "molecular_weight"];
const OPTIONAL: [&str; 4] = ["synonyms", "smiles", "inchikey", "iupac_name"];

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ImportError {
    #[error("the file is empty; the first line must name the columns")]
    Empty,
    #[error(
        "header: unknown column {0:?}; known columns: cas, name, common_name, molecular_formula, molecular_weight, synonyms, smiles, inchikey, iupac_name"
    )]
    UnknownColumn(String),
    #[error("header: column {0:?} appears twice")]
    DuplicateColumn(String),
    #[error("header: required column {0:?} is missing")]
    MissingColumn(&'static str),
}

/// One data line: its 1-based line number and the product, or why not.
pub type Row = (usize, Result<Product, String>);

#[derive(Debug, Default, PartialEq)]
pub struct ImportReport {
    pub created: usize,
    pub updated: usize,
    pub unchanged: usize,
    /// Line number and reason, in file order.
    pub rejected: Vec<(usize, String)>,
}

/// Parses the whole file; header problems fail the file, row problems
/// reject only their row.
pub fn parse_tsv(text: &str) -> Result<Vec<Row>, ImportError> {
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l.trim_end_matches('\r')));
    let (_, header) = lines.find(|(_, l)| !l.trim().is_empty()).ok_or(ImportError::Empty)?;
    let columns = parse_header(header)?;
    let mut seen: HashMap<Cas, usize> = HashMap::new();
    let mut rows = Vec::new();
    for (number, line) in lines.filter(|(_, l)| !l.trim().is_empty()) {
        let row = parse_row(&columns, line).and_then(|p| match seen.get(&p.cas) {
            Some(first) => Err(format!("cas: {} duplicates line {first}", p.cas)),
            None => {
                seen.insert(p.cas, number);
                Ok(p)
            }
        });
        rows.push((number, row));
    }
    Ok(rows)
}

fn parse_header(line: &str) -> Result<HashMap<&'static str, usize>, ImportError> {
    let mut columns = HashMap::new();
    for (i, raw) in line.split('\t').enumerate() {
        let name = raw.trim();
        let canonical = match name {
            "common_name" => "name",
            n => REQUIRED
                .iter()
                .chain(&OPTIONAL)
                .find(|k| **k == n)
                .copied()
                .ok_or_else(|| ImportError::UnknownColumn(n.chars().take(40).collect()))?,
        };
        if columns.insert(canonical, i).is_some() {
            return Err(ImportError::DuplicateColumn(canonical.into()));
        }
    }
    for required in REQUIRED {
        if !columns.contains_key(required) {
            return Err(ImportError::MissingColumn(required));
        }
    }
    Ok(columns)
}

fn parse_row(columns: &HashMap<&'static str, usize>, line: &str) -> Result<Product, String> {
    let fields: Vec<&str> = line.split('\t').collect();
    if fields.len() != columns.len() {
        return Err(format!("expected {} tab-separated fields, found {}", columns.len(), fields.len()));
    }
    let get = |name: &str| columns.get(name).map(|&i| fields[i].trim()).filter(|v| !v.is_empty());
    let cas_text = get("cas").ok_or("cas: missing")?;
    let cas = Cas::parse(cas_text).map_err(|e| format!("cas: {e}"))?;
    let weight_text = get("molecular_weight").ok_or("molecular_weight: missing")?;
    let molecular_weight =
        weight_text.parse::<f64>().map_err(|_| "molecular_weight: not a number".to_string())?;
    let draft = ProductDraft {
        cas: None,
        name: get("name").unwrap_or_default().to_string(),
        synonyms: get("synonyms")
            .map(|s| s.split('|').map(|x| x.trim().to_string()).collect())
            .unwrap_or_default(),
        molecular_formula: get("molecular_formula").unwrap_or_default().to_string(),
        molecular_weight,
        smiles: get("smiles").map(String::from),
        inchikey: get("inchikey").map(String::from),
        iupac_name: get("iupac_name").map(String::from),
        manufacturing: None,
    };
    draft.validate(cas).map(|(p, _)| p).map_err(|e| e.to_string())
}

/// Writes valid rows (skipping unchanged products) and reports every row.
/// `progress` is called once per row.
pub async fn import(
    repo: &CatalogRepo,
    rows: Vec<Row>,
    progress: impl Fn(),
) -> Result<ImportReport, RepoError> {
    let mut report = ImportReport::default();
    for (line, row) in rows {
        match row {
            Err(reason) => report.rejected.push((line, reason)),
            Ok(product) => match repo.get(product.cas).await? {
                Some(existing) if existing == product => report.unchanged += 1,
                _ => match repo.put(product, None).await? {
                    PutOutcome::Created => report.created += 1,
                    PutOutcome::Replaced => report.updated += 1,
                },
            },
        }
        progress();
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "cas\tname\tmolecular_formula\tmolecular_weight\tsmiles\tinchikey\tiupac_name";

    #[test]
    fn seed_file_parses_completely() {
        let rows = parse_tsv(crate::seed::CATALOG_SEED).unwrap();
        assert_eq!(rows.len(), 114);
        assert!(rows.iter().all(|(_, r)| r.is_ok()));
        let blz =
            rows.iter().find_map(|(_, r)| r.as_ref().ok().filter(|p| p.cas.to_string() == "953769-46-5"));
        assert_eq!(blz.unwrap().name, "BLZ-945 (sotuletinib)");
    }

    #[test]
    fn bad_rows_are_rejected_with_their_line_numbers() {
        let text = format!(
            "{HEADER}\n50-78-2\taspirin\tC9H8O4\t180.16\t\t\t\n\n50-78-3\tx\tC\t1\t\t\t\n0050-78-2\tdup\tC\t1\t\t\t\nonly\ttwo\n64-17-5\tethanol\tC2H6O\theavy\t\t\t\n"
        );
        let rows = parse_tsv(&text).unwrap();
        let outcome: Vec<(usize, Result<String, String>)> =
            rows.into_iter().map(|(n, r)| (n, r.map(|p| p.cas.to_string()))).collect();
        assert_eq!(
            outcome,
            vec![
                (2, Ok("50-78-2".into())),
                (4, Err("cas: CAS number 50-78-3 fails its check digit: expected 2, found 3".into())),
                (5, Err("cas: 50-78-2 duplicates line 2".into())),
                (6, Err("expected 7 tab-separated fields, found 2".into())),
                (7, Err("molecular_weight: not a number".into())),
            ]
        );
    }

    #[test]
    fn header_problems_fail_the_file() {
        assert_eq!(parse_tsv(""), Err(ImportError::Empty));
        assert_eq!(parse_tsv("cas\tname\tprice"), Err(ImportError::UnknownColumn("price".into())));
        assert_eq!(parse_tsv("cas\tname\tname"), Err(ImportError::DuplicateColumn("name".into())));
        assert_eq!(
            parse_tsv("cas\tname\tmolecular_formula"),
            Err(ImportError::MissingColumn("molecular_weight"))
        );
    }

    #[test]
    fn pubchem_layout_with_common_name_is_accepted() {
        let text = "cas\tmolecular_formula\tmolecular_weight\tinchikey\tcommon_name\n2715-68-6\tC7H9N5\t163.17986\tMUIPLRMGAXZWSQ-UHFFFAOYSA-N\t9-ethyladenine\n";
        let rows = parse_tsv(text).unwrap();
        assert_eq!(rows[0].1.as_ref().unwrap().name, "9-ethyladenine");
    }
}
