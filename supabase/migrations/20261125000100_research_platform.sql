-- The application's side of the research platform: the artifact bucket, a strategy catalogue,
-- and the schedules that replace the Prefect flows' upkeep.

insert into storage.buckets (id, name, public)
values ('model-artifacts', 'model-artifacts', false)
on conflict (id) do nothing;

create table if not exists public.strategies (
  name         text primary key check (length(name) between 1 and 128),
  description  text not null default '',
  asset_class  text not null default 'equities' check (asset_class in ('equities', 'futures', 'fx', 'crypto')),
  created_at   timestamptz not null default now()
);
alter table public.strategies enable row level security;
create policy strategies_read on public.strategies for select to authenticated using (true);
grant select on public.strategies to authenticated;
grant all on public.strategies to service_role;

-- Hourly verification of the audit chain, as a pg_cron job (the quantops worker runs it too).
select cron.schedule('quantops-verify-audit', '17 * * * *', $$select quantops.run_job('verify-audit')$$);
