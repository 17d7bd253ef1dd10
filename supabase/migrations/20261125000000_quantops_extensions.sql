-- Enable pgvector, pg_cron and quantops. On self-hosted Supabase, quantops must be in
-- shared_preload_libraries (see supabase/Dockerfile); hosted Supabase cannot load it.
create extension if not exists vector with schema extensions;
create extension if not exists pg_cron with schema pg_catalog;
create extension if not exists quantops cascade;

-- 384-dimensional signal embeddings with an IVFFlat index (cosine distance).
select quantops.configure(dims => 384, metric => 'cosine');
