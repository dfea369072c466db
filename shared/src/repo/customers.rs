//! Customers' entitlements: which products' manufacturing data a customer may
//! read. Layout in the `customers` table: `CUSTOMER#<id>` / `ENT#<cas>`.
//!
//! Every entitlement carries an integrity MAC (`crate::integrity`): one
//! written straight into the table, or copied from another customer, does
//! not verify and grants nothing (it is logged as an error).

use std::sync::Arc;

use serde_json::json;

use super::RepoError;
use crate::clock::now_secs;
use crate::domain::{Cas, CustomerId};
use crate::integrity::Integrity;
use crate::ports::{Attrs, Condition, Item, ItemStore, Query, Table};

#[derive(Clone)]
pub struct CustomerRepo {
    store: Arc<dyn ItemStore>,
    integrity: Arc<Integrity>,
}

fn customer_pk(customer: &CustomerId) -> String {
    format!("CUSTOMER#{customer}")
}

fn entitlement_sk(cas: Cas) -> String {
    format!("ENT#{cas}")
}

impl CustomerRepo {
    pub fn new(store: Arc<dyn ItemStore>, integrity: Arc<Integrity>) -> Self {
        CustomerRepo { store, integrity }
    }

    pub async fn is_entitled(&self, customer: &CustomerId, cas: Cas) -> Result<bool, RepoError> {
        let item = self.store.get(Table::Customers, &customer_pk(customer), &entitlement_sk(cas)).await?;
        match item {
            Some(item) => self.verified(&item).await,
            None => Ok(false),
        }
    }

    /// Whether a stored entitlement is genuine; a forged one is logged.
    async fn verified(&self, item: &Item) -> Result<bool, RepoError> {
        match self.integrity.verify(Table::Customers, item).await {
            Ok(()) => Ok(true),
            Err(crate::integrity::IntegrityError::Invalid(m)) => {
                tracing::error!(error = %m, "entitlement failed its integrity check; ignored");
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }

    pub async fn grant(&self, customer: &CustomerId, cas: Cas) -> Result<(), RepoError> {
        let attrs = Attrs::from_iter([
            ("cas".to_string(), json!(cas)),
            ("granted_at".to_string(), json!(now_secs())),
        ]);
        let mut item = Item::new(customer_pk(customer), entitlement_sk(cas), attrs);
        self.integrity.sign(Table::Customers, &mut item).await?;
        Ok(self.store.put(Table::Customers, item, Condition::Always).await?)
    }

    pub async fn revoke(&self, customer: &CustomerId, cas: Cas) -> Result<(), RepoError> {
        let pk = customer_pk(customer);
        Ok(self.store.delete(Table::Customers, &pk, &entitlement_sk(cas), Condition::Always).await?)
    }

    /// Every CAS number the customer is entitled to (genuine entries only).
    pub async fn entitlements(&self, customer: &CustomerId) -> Result<Vec<Cas>, RepoError> {
        let mut out = Vec::new();
        let mut after = None;
        loop {
            let query = Query {
                table: Table::Customers,
                pk: customer_pk(customer),
                sk_prefix: "ENT#".into(),
                after,
                limit: 100,
            };
            let page = self.store.query(query).await?;
            for item in &page.items {
                if self.verified(item).await? {
                    let text = item.sk.trim_start_matches("ENT#");
                    out.push(Cas::parse(text).map_err(RepoError::corrupt)?);
                }
            }
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(out),
            }
        }
    }
}
