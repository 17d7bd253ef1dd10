//! Every quantops GUC: private statics, one `init()`, public accessors. The `quantops.` prefix is
//! reserved, so a misspelt `quantops.*` setting is an error rather than a silent placeholder.

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting, PostgresGucEnum};
use std::ffi::CString;

static ENABLED: GucSetting<bool> = GucSetting::<bool>::new(true);
static DATABASE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c"postgres"));
static NAPTIME_S: GucSetting<i32> = GucSetting::<i32>::new(10);
static EMBEDDING_API_KEY_FILE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static EMBEDDING_ALLOWED_HOSTS: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static ENVIRONMENT: GucSetting<FlagEnvironment> = GucSetting::<FlagEnvironment>::new(FlagEnvironment::Production);
static FLAG_EXPOSURE_SAMPLE: GucSetting<f64> = GucSetting::<f64>::new(0.0);
static MODEL_DIR: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static MODEL_THREADS: GucSetting<i32> = GucSetting::<i32>::new(0);

/// The environment feature flags are evaluated in.
#[derive(PostgresGucEnum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum FlagEnvironment {
    #[name = c"local"]
    Local,
    #[name = c"staging"]
    Staging,
    #[name = c"production"]
    Production,
}

pub fn init() {
    GucRegistry::define_bool_guc(
        c"quantops.enabled",
        c"Whether the quantops scheduler worker runs jobs.",
        c"When off, the worker keeps its heartbeat but starts no job. SQL functions still work.",
        &ENABLED,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"quantops.database",
        c"The database the quantops scheduler worker connects to.",
        c"The worker runs the jobs of the quantops extension installed in this database.",
        &DATABASE,
        GucContext::Postmaster,
        GucFlags::SUPERUSER_ONLY,
    );
    GucRegistry::define_int_guc(
        c"quantops.naptime",
        c"Seconds the quantops scheduler worker sleeps between looks for due jobs.",
        c"The worker also wakes at once on SIGHUP and SIGTERM.",
        &NAPTIME_S,
        1,
        86_400,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_string_guc(
        c"quantops.embedding_api_key_file",
        c"File holding the API key of the http embedder's provider (superuser-only).",
        c"The worker reads the key from this file, readable by the postgres user, at each batch; the key itself never passes through a setting, a table or a log. Alternatively name a Supabase Vault secret in the embedder's params (api_key_secret).",
        &EMBEDDING_API_KEY_FILE,
        GucContext::Sighup,
        GucFlags::SUPERUSER_ONLY,
    );
    GucRegistry::define_string_guc(
        c"quantops.embedding_allowed_hosts",
        c"Hosts the http embedder may call: host or host:port, separated by commas (empty = none).",
        c"Set in postgresql.conf or with ALTER SYSTEM (superuser). The worker is a superuser process that holds the provider's API key, so whoever registers an embedder never chooses where it connects.",
        &EMBEDDING_ALLOWED_HOSTS,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_enum_guc(
        c"quantops.environment",
        c"The environment feature flags are evaluated in: local, staging or production.",
        c"A flag is on only where its definition enables it; set it per server or per database (ALTER DATABASE ... SET, superuser).",
        &ENVIRONMENT,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_float_guc(
        c"quantops.flag_exposure_sample",
        c"Share of quantops.evaluate_flag() calls logged in quantops.flag_exposures (0 = none).",
        c"For experiments: which context got which variant. flag_enabled() never logs.",
        &FLAG_EXPOSURE_SAMPLE,
        0.0,
        1.0,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"quantops.model_dir",
        c"Folder of the local sentence models (embedder kind model), superuser-only; empty = none.",
        c"Each model is a subfolder holding config.json, tokenizer.json and model.safetensors (scripts/bootstrap.sh installs all-MiniLM-L6-v2). Only the quantops embedder worker loads a model; an embedder names its subfolder, never a path.",
        &MODEL_DIR,
        GucContext::Sighup,
        GucFlags::SUPERUSER_ONLY,
    );
    GucRegistry::define_int_guc(
        c"quantops.model_threads",
        c"Threads the quantops embedder worker runs the local model on (0 = one per core).",
        c"Read when the worker loads the model.",
        &MODEL_THREADS,
        0,
        64,
        GucContext::Sighup,
        GucFlags::default(),
    );
    // SAFETY: _PG_init, on the main thread, after the GUCs above are defined
    unsafe { pgrx::pg_sys::MarkGUCPrefixReserved(c"quantops".as_ptr()) };
}

pub fn enabled() -> bool {
    ENABLED.get()
}

pub fn database() -> String {
    DATABASE.get().and_then(|c| c.into_string().ok()).filter(|s| !s.is_empty()).unwrap_or_else(|| "postgres".to_string())
}

pub fn naptime() -> std::time::Duration {
    std::time::Duration::from_secs(NAPTIME_S.get().max(1) as u64)
}

/// The path of the provider's API key file, if set. Only the worker reads it.
pub fn embedding_api_key_file() -> Option<String> {
    EMBEDDING_API_KEY_FILE.get().and_then(|c| c.into_string().ok()).filter(|s| !s.is_empty())
}

/// The allowlist of hosts the http embedder may call (empty: none).
pub fn embedding_allowed_hosts() -> String {
    EMBEDDING_ALLOWED_HOSTS.get().and_then(|c| c.into_string().ok()).unwrap_or_default()
}

pub fn environment() -> FlagEnvironment {
    ENVIRONMENT.get()
}

pub fn flag_exposure_sample() -> f64 {
    FLAG_EXPOSURE_SAMPLE.get()
}

/// The folder of the local sentence models, if set (superuser-only).
pub fn model_dir() -> Option<String> {
    MODEL_DIR.get().and_then(|c| c.into_string().ok()).filter(|s| !s.is_empty())
}

/// Threads for the local model (0: one per core).
pub fn model_threads() -> usize {
    MODEL_THREADS.get().max(0) as usize
}
