-- The story's tables and the connector's role, run once by the postgres image at first start
-- (mounted into /docker-entrypoint-initdb.d). `entity-cdc setup --apply` (the compose
-- service entity-cdc-setup, as postgres) then creates the publication, sets REPLICA
-- IDENTITY FULL and creates the slot.

create table public.orders (
  id bigint primary key,
  tenant_id bigint not null,
  status text not null,
  priority text,
  total numeric(12,2) not null,
  version int not null default 1,
  updated_by text
);

create table public.products (
  id bigint primary key,
  tenant_id bigint not null,
  name text not null,
  price numeric(10,2) not null,
  version int not null default 1
);

-- The connector runs with REPLICATION and SELECT only; setup runs as the owner.
create role entity_cdc with login replication password 'entity_cdc';
grant select on public.orders, public.products to entity_cdc;
