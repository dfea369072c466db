//! The product catalog on the item store.
//!
//! Layout in the `catalog` table:
//! - `PRODUCT#<cas>` / `PRODUCT`: the public record plus its search tokens
//!   and a `rev` (random per write, never reused, even after a delete) for
//!   optimistic concurrency;
//! - `PRODUCT#<cas>` / `MANUFACTURING`: the confidential record, only as an
//!   envelope ciphertext bound to this item and field;
//! - `NAME` / `<token>\u{1f}<cas>`: one index entry per search token (name,
//!   synonyms and the words inside them), holding a summary of the product;
//! - `FORMULA` / `<formula>\u{1f}<cas>`: the formula index.
//!
//! The product, its index entries and its ciphertext change in one transaction.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::RepoError;
use crate::crypto::{self, Binding};
use crate::domain::{Cas, ManufacturingProcess, Product};
use crate::ports::{Attrs, Condition, EncryptionContext, Item, ItemStore, KeyVault, Query, Table, WriteOp};

const SEP: char = '\u{1f}';
const MAX_TOKENS: usize = 40;
pub const MAX_TOKEN_CHARS: usize = 100;
const PRODUCT_SK: &str = "PRODUCT";
const MANUFACTURING_SK: &str = "MANUFACTURING";
const NAME_PK: &str = "NAME";
const FORMULA_PK: &str = "FORMULA";

/// What a search result shows of a product.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProductSummary {
    pub cas: Cas,
    pub name: String,
    pub molecular_formula: String,
    pub molecular_weight: f64,
}

/// One way to search; `All` lists the catalog in name order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Search {
    All,
    /// Case-insensitive prefix of the name, a synonym, or a word in them.
    Name(String),
    /// Exact molecular formula.
    Formula(String),
}

pub struct SearchPage {
    pub items: Vec<ProductSummary>,
    /// The index sort key to resume after.
    pub next: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    Created,
    Replaced,
}

#[derive(Clone)]
pub struct CatalogRepo {
    store: Arc<dyn ItemStore>,
    vault: Arc<dyn KeyVault>,
}

fn product_pk(cas: Cas) -> String {
    format!("PRODUCT#{cas}")
}

/// The data key is per (table, field), cached across products; the product
/// is in the associated data, so a record moved to another product fails.
fn manufacturing_binding(cas: Cas) -> Binding {
    let pk = product_pk(cas);
    Binding {
        key_context: EncryptionContext::new([("table", Table::Catalog.as_str()), ("field", "process")]),
        item: EncryptionContext::new([("pk", pk.as_str()), ("sk", MANUFACTURING_SK)]),
    }
}

/// Lower-cased names and synonyms, plus every word-start suffix of them, so
/// "hydro" finds "amantadine hydrochloride".
pub fn search_tokens(product: &Product) -> BTreeSet<String> {
    let mut tokens = BTreeSet::new();
    for text in std::iter::once(&product.name).chain(&product.synonyms) {
        let lower = normalize(text);
        let starts = lower
            .char_indices()
            .filter(|&(i, _)| i == 0 || is_word_break(lower[..i].chars().next_back()))
            .map(|(i, _)| i);
        for start in starts {
            let token = truncate(&lower[start..]);
            if !token.is_empty() && tokens.len() < MAX_TOKENS {
                tokens.insert(token);
            }
        }
    }
    tokens
}

fn is_word_break(prev: Option<char>) -> bool {
    prev.is_some_and(|c| c == ' ' || c == '-' || c == ',' || c == '(' || c == '[' || c == '/')
}

/// Lower case, single spaces: how names are compared.
pub fn normalize(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase()
}

fn truncate(text: &str) -> String {
    text.chars().take(MAX_TOKEN_CHARS).collect()
}

fn summary(p: &Product) -> ProductSummary {
    ProductSummary {
        cas: p.cas,
        name: p.name.clone(),
        molecular_formula: p.molecular_formula.clone(),
        molecular_weight: p.molecular_weight,
    }
}

fn to_attrs(value: Value) -> Attrs {
    match value {
        Value::Object(map) => map,
        _ => Attrs::new(),
    }
}

/// Stored form of a product item.
#[derive(Serialize, Deserialize)]
struct ProductItem {
    product: Product,
    tokens: BTreeSet<String>,
    /// Random per write: a counter would restart after a delete, letting a
    /// writer that read the old product pass its condition on the new one.
    rev: String,
}

impl CatalogRepo {
    pub fn new(store: Arc<dyn ItemStore>, vault: Arc<dyn KeyVault>) -> Self {
        CatalogRepo { store, vault }
    }

    async fn load(&self, cas: Cas) -> Result<Option<ProductItem>, RepoError> {
        let Some(item) = self.store.get(Table::Catalog, &product_pk(cas), PRODUCT_SK).await? else {
            return Ok(None);
        };
        let stored = serde_json::from_value(Value::Object(item.attrs)).map_err(RepoError::corrupt)?;
        Ok(Some(stored))
    }

    pub async fn get(&self, cas: Cas) -> Result<Option<Product>, RepoError> {
        Ok(self.load(cas).await?.map(|s| s.product))
    }

    /// Creates or replaces a product. `manufacturing`, when given, replaces
    /// the confidential record; when `None` the existing one is kept.
    pub async fn put(
        &self,
        product: Product,
        manufacturing: Option<&ManufacturingProcess>,
    ) -> Result<PutOutcome, RepoError> {
        let cas = product.cas;
        let sealed = match manufacturing {
            Some(m) => {
                let text = serde_json::to_vec(m).map_err(RepoError::corrupt)?;
                Some(crypto::seal(self.vault.as_ref(), &manufacturing_binding(cas), &text).await?)
            }
            None => None,
        };
        // Optimistic concurrency: retry if another writer changed the product
        // between our read and our conditional write.
        for _ in 0..5 {
            let existing = self.load(cas).await?;
            let ops = self.put_ops(&product, existing.as_ref(), sealed.as_deref());
            match self.store.transact(ops).await {
                Ok(()) => {
                    return Ok(if existing.is_some() { PutOutcome::Replaced } else { PutOutcome::Created });
                }
                Err(crate::ports::StoreError::ConditionFailed) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(RepoError::Conflict)
    }

    fn put_ops(
        &self,
        product: &Product,
        existing: Option<&ProductItem>,
        sealed: Option<&str>,
    ) -> Vec<WriteOp> {
        let cas = product.cas;
        let tokens = search_tokens(product);
        let condition = match existing {
            Some(e) => Condition::AttrEquals("rev".into(), json!(e.rev)),
            None => Condition::NotExists,
        };
        let stored = ProductItem { product: product.clone(), tokens: tokens.clone(), rev: new_rev() };
        let attrs = to_attrs(serde_json::to_value(&stored).expect("product serializes"));
        let mut ops = vec![WriteOp::Put {
            table: Table::Catalog,
            item: Item::new(product_pk(cas), PRODUCT_SK, attrs),
            condition,
        }];
        let index_entry = to_attrs(json!({ "summary": summary(product), "tokens": tokens }));
        if let Some(old) = existing {
            for stale in old.tokens.difference(&tokens) {
                ops.push(delete_op(NAME_PK, index_sk(stale, cas)));
            }
            if old.product.molecular_formula != product.molecular_formula {
                ops.push(delete_op(FORMULA_PK, index_sk(&old.product.molecular_formula, cas)));
            }
        }
        for token in &tokens {
            ops.push(put_op(NAME_PK, index_sk(token, cas), index_entry.clone()));
        }
        ops.push(put_op(FORMULA_PK, index_sk(&product.molecular_formula, cas), index_entry));
        if let Some(sealed) = sealed {
            ops.push(put_op(
                &product_pk(cas),
                MANUFACTURING_SK.into(),
                to_attrs(json!({ "process": sealed })),
            ));
        }
        ops
    }

    /// Deletes a product with its index entries and confidential record.
    pub async fn delete(&self, cas: Cas) -> Result<bool, RepoError> {
        for _ in 0..5 {
            let Some(existing) = self.load(cas).await? else {
                return Ok(false);
            };
            let condition = Condition::AttrEquals("rev".into(), json!(existing.rev));
            let mut ops = vec![WriteOp::Delete {
                table: Table::Catalog,
                pk: product_pk(cas),
                sk: PRODUCT_SK.into(),
                condition,
            }];
            ops.extend(existing.tokens.iter().map(|t| delete_op(NAME_PK, index_sk(t, cas))));
            ops.push(delete_op(FORMULA_PK, index_sk(&existing.product.molecular_formula, cas)));
            ops.push(delete_op(&product_pk(cas), MANUFACTURING_SK.into()));
            match self.store.transact(ops).await {
                Ok(()) => return Ok(true),
                Err(crate::ports::StoreError::ConditionFailed) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(RepoError::Conflict)
    }

    /// The decrypted manufacturing record, if the product has one.
    pub async fn manufacturing(&self, cas: Cas) -> Result<Option<ManufacturingProcess>, RepoError> {
        let Some(item) = self.store.get(Table::Catalog, &product_pk(cas), MANUFACTURING_SK).await? else {
            return Ok(None);
        };
        let sealed = item
            .attrs
            .get("process")
            .and_then(Value::as_str)
            .ok_or_else(|| RepoError::corrupt("no ciphertext"))?;
        let plain = crypto::open(self.vault.as_ref(), &manufacturing_binding(cas), sealed).await?;
        // serde's message may quote the decrypted text: the error names the
        // position only, so no confidential byte reaches a log line.
        let record = serde_json::from_slice(&plain).map_err(|e| {
            RepoError::corrupt(format!(
                "decrypted manufacturing record is not valid ({:?} at line {} column {})",
                e.classify(),
                e.line(),
                e.column()
            ))
        })?;
        Ok(Some(record))
    }

    /// One page of search results, each product once, in index order.
    /// `after` is a `SearchPage::next` from the same search.
    pub async fn search(
        &self,
        search: &Search,
        after: Option<String>,
        limit: usize,
    ) -> Result<SearchPage, RepoError> {
        let (pk, prefix) = match search {
            Search::All => (NAME_PK, String::new()),
            Search::Name(text) => (NAME_PK, truncate(&normalize(text))),
            Search::Formula(f) => (FORMULA_PK, format!("{f}{SEP}")),
        };
        let mut items = Vec::with_capacity(limit);
        let mut cursor = after;
        loop {
            let want = limit - items.len();
            let query = Query {
                table: Table::Catalog,
                pk: pk.into(),
                sk_prefix: prefix.clone(),
                after: cursor.clone(),
                limit: want,
            };
            let page = self.store.query(query).await?;
            for item in page.items {
                cursor = Some(item.sk.clone());
                if pk == FORMULA_PK || is_first_match(&item, &prefix) {
                    let summary =
                        item.attrs.get("summary").cloned().ok_or_else(|| RepoError::corrupt("no summary"))?;
                    items.push(serde_json::from_value(summary).map_err(RepoError::corrupt)?);
                }
            }
            if page.next.is_none() {
                return Ok(SearchPage { items, next: None });
            }
            if items.len() == limit {
                return Ok(SearchPage { items, next: cursor });
            }
        }
    }
}

/// A product has one index entry per token; for a prefix search it is shown
/// at the first (smallest) of its tokens that match, so it appears once across
/// all pages without the cursor having to remember what was shown.
fn is_first_match(item: &Item, prefix: &str) -> bool {
    let Some(token) = item.sk.rsplit_once(SEP).map(|(t, _)| t) else {
        return false;
    };
    let tokens = item.attrs.get("tokens").and_then(Value::as_array);
    let first =
        tokens.into_iter().flatten().filter_map(Value::as_str).filter(|t| t.starts_with(prefix)).min();
    first == Some(token)
}

fn new_rev() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("OS randomness");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn index_sk(token: &str, cas: Cas) -> String {
    format!("{token}{SEP}{cas}")
}

fn put_op(pk: &str, sk: String, attrs: Attrs) -> WriteOp {
    WriteOp::Put { table: Table::Catalog, item: Item::new(pk, sk, attrs), condition: Condition::Always }
}

fn delete_op(pk: &str, sk: String) -> WriteOp {
    WriteOp::Delete { table: Table::Catalog, pk: pk.into(), sk, condition: Condition::Always }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn product(name: &str, synonyms: &[&str]) -> Product {
        Product {
            cas: Cas::parse("665-66-7").unwrap(),
            name: name.into(),
            synonyms: synonyms.iter().map(|s| s.to_string()).collect(),
            molecular_formula: "C10H18ClN".into(),
            molecular_weight: 187.71,
            smiles: None,
            inchikey: None,
            iupac_name: None,
        }
    }

    #[test]
    fn tokens_cover_names_synonyms_and_inner_words() {
        let tokens = search_tokens(&product("Amantadine  Hydrochloride", &["1-adamantanamine HCl"]));
        let want = [
            "1-adamantanamine hcl",
            "adamantanamine hcl",
            "amantadine hydrochloride",
            "hcl",
            "hydrochloride",
        ];
        assert_eq!(tokens.into_iter().collect::<Vec<_>>(), want);
    }

    #[test]
    fn tokens_are_bounded() {
        let long = (0..200).map(|i| format!("w{i}")).collect::<Vec<_>>().join(" ");
        let tokens = search_tokens(&product(&long, &[]));
        assert_eq!(tokens.len(), MAX_TOKENS);
        assert!(tokens.iter().all(|t| t.chars().count() <= MAX_TOKEN_CHARS));
    }
}
