-- Runs once, as supabase_admin, when Supabase's postgres image initialises its database.
create extension if not exists vector with schema extensions;
create extension if not exists quantops;
-- the application's migrations call quantops.configure(dims => ...) (granted to postgres)
