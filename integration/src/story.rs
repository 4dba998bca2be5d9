//! The story's entities as the sample connector.yaml declares them, for tests that write
//! their own connector.yaml around them.

/// The `entities` list of the sample connector.yaml: Order (diff mode, priority column)
/// and Product (full mode).
pub const STORY_ENTITIES: &str = "
  - name: Order
    table: public.orders
    tenantColumn: tenant_id
    versionColumn: version
    userColumn: updated_by
    streaming:
      enabled: true
      topicPrefix: core.orders
      eventPayloadMode: diff
      priorityField: priority
  - name: Product
    table: public.products
    tenantColumn: tenant_id
    versionColumn: version
    streaming:
      topicPrefix: core.catalog
      eventPayloadMode: full
";
