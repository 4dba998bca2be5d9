//! The metamodel at run time: which relation is which entity, and where in a row the
//! entity's key, tenant, version, user and priority are.

mod binding;
mod context;

pub use binding::{BindError, Binding, EntityModel, TenantSource};
pub use context::{TransactionContext, CONTEXT_PREFIX};
