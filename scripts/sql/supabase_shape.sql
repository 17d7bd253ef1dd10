-- What Supabase's postgres image (supabase/postgres, PostgreSQL 15) has, rebuilt on a plain
-- cluster that initdb made with `-U supabase_admin`; run as supabase_admin. Idempotent: created
-- only where absent, grants repeated harmlessly.
--
-- The shape that matters to quantops (sources: supabase/postgres migrations/db: migrate.sh,
-- init-scripts/00000000000000-initial-schema.sql, migrations/10000000000000_demote-postgres.sql,
-- 20230201083204_grant_auth_roles_to_postgres.sql, 20230306081037_grant_pg_monitor_to_postgres.sql,
-- 20240606060239_grant_predefined_roles_to_postgres.sql, 20230529180330_alter_api_roles_for_inherit.sql,
-- ansible/files/postgresql_extension_custom_scripts/pg_cron/after-create.sql):
--   supabase_admin  the bootstrap superuser; extensions are created as it (supautils)
--   postgres        NOT a superuser: LOGIN CREATEDB CREATEROLE REPLICATION BYPASSRLS, owner of
--                   the database and of schema extensions, member of anon, authenticated,
--                   service_role, pg_monitor, pg_read_all_data, pg_signal_backend
--   anon, authenticated (NOLOGIN), service_role (NOLOGIN BYPASSRLS), authenticator (LOGIN
--   NOINHERIT, member of the three)
-- plus the auth schema (auth.uid()/role()/jwt() reading request.jwt.claims as Supabase's do) and
-- storage.buckets/objects with Supabase's columns. Not reproduced: supautils itself (a C module
-- that is not packaged here), pgsodium, Vault, realtime.
set client_min_messages = warning;

do $$
begin
  if current_user <> 'supabase_admin' or not (select rolsuper from pg_roles where rolname = current_user) then
    raise exception 'run the Supabase shape as the bootstrap superuser supabase_admin (initdb -U supabase_admin)';
  end if;
  if not exists (select 1 from pg_roles where rolname = 'postgres') then
    create role postgres login createdb createrole replication bypassrls;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'anon') then
    create role anon nologin;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'authenticated') then
    create role authenticated nologin;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'service_role') then
    create role service_role nologin bypassrls;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'authenticator') then
    create role authenticator login noinherit;
  end if;
end
$$;
-- migrations/10000000000000_demote-postgres.sql: postgres is not a superuser
alter role postgres nosuperuser createdb createrole login replication bypassrls;
alter role anon inherit;
alter role authenticated inherit;
alter role service_role inherit;
alter role anon set statement_timeout = '3s';
alter role authenticated set statement_timeout = '8s';
alter role authenticator set statement_timeout = '8s';
grant anon, authenticated, service_role to authenticator;
grant anon, authenticated, service_role to postgres;
grant pg_monitor, pg_read_all_data, pg_signal_backend to postgres;
alter database postgres owner to postgres;
grant all on database postgres to postgres;

create schema if not exists extensions authorization postgres;
grant usage on schema extensions to postgres, anon, authenticated, service_role;
grant all on schema extensions to postgres;
alter default privileges for role supabase_admin in schema extensions grant all on tables to postgres with grant option;
alter default privileges for role supabase_admin in schema extensions grant all on routines to postgres with grant option;
alter default privileges for role supabase_admin in schema extensions grant all on sequences to postgres with grant option;
-- as in Supabase's image: extensions are on these roles' search_path
alter role supabase_admin set search_path = "$user", public, auth, extensions;
alter role postgres set search_path = "$user", public, extensions;
alter role authenticator set search_path = "$user", public, extensions;
alter role anon set search_path = "$user", public, extensions;
alter role authenticated set search_path = "$user", public, extensions;
alter role service_role set search_path = "$user", public, extensions;

grant usage on schema public to postgres, anon, authenticated, service_role;
alter default privileges for role supabase_admin in schema public grant all on tables to postgres, anon, authenticated, service_role;
alter default privileges for role supabase_admin in schema public grant all on functions to postgres, anon, authenticated, service_role;
alter default privileges for role supabase_admin in schema public grant all on sequences to postgres, anon, authenticated, service_role;
alter default privileges for role postgres in schema public grant all on tables to postgres, anon, authenticated, service_role;
alter default privileges for role postgres in schema public grant all on functions to postgres, anon, authenticated, service_role;
alter default privileges for role postgres in schema public grant all on sequences to postgres, anon, authenticated, service_role;

create schema if not exists auth authorization supabase_admin;
create schema if not exists storage authorization supabase_admin;
grant usage on schema auth, storage to postgres, anon, authenticated, service_role;

create or replace function auth.uid() returns uuid
language sql stable
as $$
  select coalesce(
    nullif(current_setting('request.jwt.claim.sub', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
  )::uuid
$$;

create or replace function auth.role() returns text
language sql stable
as $$
  select coalesce(
    nullif(current_setting('request.jwt.claim.role', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role')
  )::text
$$;

create or replace function auth.jwt() returns jsonb
language sql stable
as $$
  select coalesce(
    nullif(current_setting('request.jwt.claim', true), ''),
    nullif(current_setting('request.jwt.claims', true), '')
  )::jsonb
$$;
grant execute on function auth.uid(), auth.role(), auth.jwt() to postgres, anon, authenticated, service_role;

create table if not exists auth.users (
  id          uuid primary key,
  email       text unique,
  role        text default 'authenticated',
  aud         text default 'authenticated',
  created_at  timestamptz default now(),
  updated_at  timestamptz default now()
);

-- seeds insert users as postgres (Supabase grants it the auth tables)
grant all on auth.users to postgres, service_role;

create table if not exists storage.buckets (
  id                  text primary key,
  name                text not null,
  owner               uuid,
  created_at          timestamptz default now(),
  updated_at          timestamptz default now(),
  public              boolean default false,
  avif_autodetection  boolean default false,
  file_size_limit     bigint,
  allowed_mime_types  text[],
  owner_id            text
);
create unique index if not exists bname on storage.buckets using btree (name);

create table if not exists storage.objects (
  id                uuid primary key default gen_random_uuid(),
  bucket_id         text references storage.buckets (id),
  name              text,
  owner             uuid,
  created_at        timestamptz default now(),
  updated_at        timestamptz default now(),
  last_accessed_at  timestamptz default now(),
  metadata          jsonb,
  path_tokens       text[] generated always as (string_to_array(name, '/')) stored,
  version           text,
  owner_id          text,
  user_metadata     jsonb
);
create unique index if not exists bucketid_objname on storage.objects using btree (bucket_id, name);
create index if not exists name_prefix_search on storage.objects using btree (name text_pattern_ops);
alter table storage.buckets enable row level security;
alter table storage.objects enable row level security;
grant all on storage.buckets, storage.objects to postgres, service_role;
grant select on storage.buckets, storage.objects to authenticated;

-- Extensions are created as supabase_admin, as supautils does for `create extension` by postgres:
-- the extension and its objects belong to supabase_admin. pg_cron lives in pg_catalog with
-- supautils' after-create grants to postgres.
create extension if not exists vector with schema extensions;
create extension if not exists pg_cron with schema pg_catalog;
grant usage on schema cron to postgres with grant option;
grant all on all functions in schema cron to postgres with grant option;
grant all privileges on all tables in schema cron to postgres with grant option;
revoke all on table cron.job from postgres;
grant select on table cron.job to postgres with grant option;
