//! The metamodel at run time: which relation is which entity, and where in a row the
//! entity's key, tenant, version, user and priority are.

mod binding;
mod context;
mod verify;

pub use binding::{check_columns, BindError, Binding, EntityModel, TenantSource};
pub use context::{TransactionContext, CONTEXT_PREFIX};
pub use verify::verify_entities;
