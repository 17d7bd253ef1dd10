//! What a backtest call asks for, read from its SQL arguments (pure): the strategy and its
//! parameters, the options (execution, direction, sizing, costs, annualisation), a grid of
//! parameters, and the run id that names a result.

use super::engine::{Config, Costs, Direction, Execution, Sizing, Strategy};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

/// Bumped whenever the engine's results change for the same inputs: part of every run id.
pub const ENGINE: &str = "quantops-backtest/1";

/// The most parameter sets one grid call may sweep a symbol.
pub const MAX_GRID: usize = 100_000;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SpecError {
    /// 22023
    #[error("{0}")]
    Invalid(String),
    /// 54000: a grid too large
    #[error("{0}")]
    TooLarge(String),
}

fn invalid<T>(m: impl Into<String>) -> Result<T, SpecError> {
    Err(SpecError::Invalid(m.into()))
}

/// Everything but the strategy: how orders fill and cost, and how metrics annualise.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    pub config: Config,
    pub periods_per_year: i32,
    pub risk_free: f64,
    pub allow_same_bar: bool,
    /// What backtest_results.strategy says (default: the strategy's name and the symbols).
    pub label: Option<String>,
}

impl Options {
    /// The options in one canonical form (every default filled in): the same settings given
    /// differently hash the same.
    pub fn canonical(&self) -> Value {
        let c = &self.config;
        json!({
            "execution": c.execution.name(),
            "allow_same_bar": self.allow_same_bar,
            "direction": match c.direction { Direction::LongOnly => "long_only", Direction::LongShort => "long_short" },
            "sizing": match c.sizing {
                Sizing::AllIn => json!("all_in"),
                Sizing::Notional(x) => json!({ "notional": x }),
                Sizing::Weight(w) => json!({ "weight": w }),
            },
            "fees": c.costs.fees,
            "fixed_fees": c.costs.fixed_fees,
            "slippage": c.costs.slippage,
            "init_cash": c.init_cash,
            "periods_per_year": self.periods_per_year,
            "risk_free": self.risk_free,
        })
    }
}

fn num(o: &Map<String, Value>, key: &str, default: f64) -> Result<f64, SpecError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Number(n)) => Ok(n.as_f64().unwrap_or(f64::NAN)),
        Some(v) => invalid(format!("option {key} must be a number, not {v}")),
    }
}

fn text<'a>(o: &'a Map<String, Value>, key: &str, default: &'a str) -> Result<&'a str, SpecError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::String(s)) => Ok(s),
        Some(v) => invalid(format!("option {key} must be a string, not {v}")),
    }
}

/// Reads the options object. `symbols`: how many symbols one backtest holds (the default sizing
/// is all_in for one, an equal weight each for more).
pub fn options(v: &Value, symbols: usize, strategy: &str) -> Result<Options, SpecError> {
    let Some(o) = v.as_object() else { return invalid("options must be a JSON object") };
    const KNOWN: &[&str] = &[
        "execution",
        "allow_same_bar",
        "direction",
        "sizing",
        "notional",
        "weight",
        "fees",
        "fixed_fees",
        "slippage",
        "init_cash",
        "periods_per_year",
        "risk_free",
        "label",
    ];
    if let Some(k) = o.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return invalid(format!("unknown option \"{k}\" (known: {})", KNOWN.join(", ")));
    }
    let allow_same_bar = match o.get("allow_same_bar") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(v) => return invalid(format!("option allow_same_bar must be true or false, not {v}")),
    };
    let execution = match text(o, "execution", "next_open")? {
        "next_open" => Execution::NextOpen,
        "next_close" => Execution::NextClose,
        "same_close" if allow_same_bar => Execution::SameClose,
        "same_close" => {
            return invalid("execution same_close fills at the close the decision was made from; say so with \"allow_same_bar\": true")
        }
        e => return invalid(format!("execution must be next_open, next_close or same_close, not \"{e}\"")),
    };
    let direction = match text(o, "direction", "long_only")? {
        "long_only" => Direction::LongOnly,
        "long_short" => Direction::LongShort,
        d => return invalid(format!("direction must be long_only or long_short, not \"{d}\"")),
    };
    let default_sizing = if strategy == "target_weights" || symbols > 1 { "weight" } else { "all_in" };
    let sizing = match text(o, "sizing", default_sizing)? {
        "all_in" => Sizing::AllIn,
        "notional" => match o.get("notional") {
            Some(Value::Number(n)) => Sizing::Notional(n.as_f64().unwrap_or(f64::NAN)),
            _ => return invalid("sizing notional needs \"notional\": the cash a position takes"),
        },
        "weight" => Sizing::Weight(num(o, "weight", 1.0 / symbols.max(1) as f64)?),
        s => return invalid(format!("sizing must be all_in, notional or weight, not \"{s}\"")),
    };
    let periods_per_year = num(o, "periods_per_year", 252.0)?;
    if periods_per_year.fract() != 0.0 || !(1.0..=100_000.0).contains(&periods_per_year) {
        return invalid("periods_per_year must be a whole number between 1 and 100000");
    }
    let risk_free = num(o, "risk_free", 0.0)?;
    if !risk_free.is_finite() {
        return invalid("risk_free must be a finite number");
    }
    let label = match o.get("label") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if !s.is_empty() && s.chars().count() <= 128 && !s.chars().any(char::is_control) => Some(s.clone()),
        Some(_) => return invalid("label must be a string of 1 to 128 characters without control characters"),
    };
    Ok(Options {
        config: Config {
            execution,
            direction,
            sizing,
            costs: Costs { fees: num(o, "fees", 0.0)?, fixed_fees: num(o, "fixed_fees", 0.0)?, slippage: num(o, "slippage", 0.0)? },
            init_cash: num(o, "init_cash", 100.0)?,
        },
        periods_per_year: periods_per_year as i32,
        risk_free,
        allow_same_bar,
        label,
    })
}

fn window(o: &Map<String, Value>, key: &str, strategy: &str) -> Result<usize, SpecError> {
    match o.get(key).and_then(Value::as_u64) {
        Some(n) if (1..=10_000).contains(&n) => Ok(n as usize),
        _ => invalid(format!("{strategy} needs \"{key}\": a whole number from 1 to 10000")),
    }
}

/// The strategy named `name` with its parameters. For target_weights, the second value is the
/// name of the stored weights to follow.
pub fn strategy(name: &str, params: &Value) -> Result<(Strategy, Option<String>), SpecError> {
    let Some(o) = params.as_object() else { return invalid("params must be a JSON object") };
    let only = |keys: &[&str]| -> Result<(), SpecError> {
        match o.keys().find(|k| !keys.contains(&k.as_str())) {
            Some(k) => invalid(format!("{name} takes no parameter \"{k}\" (it takes {})", keys.join(", "))),
            None => Ok(()),
        }
    };
    match name {
        "ma_cross" => {
            only(&["fast", "slow"])?;
            let (fast, slow) = (window(o, "fast", name)?, window(o, "slow", name)?);
            if fast >= slow {
                return invalid(format!("ma_cross needs fast < slow, not fast {fast} and slow {slow}"));
            }
            Ok((Strategy::MaCross { fast, slow }, None))
        }
        "breakout" => {
            only(&["window"])?;
            Ok((Strategy::Breakout { window: window(o, "window", name)? }, None))
        }
        "target_weights" => {
            only(&["name"])?;
            match o.get("name") {
                Some(Value::String(s)) if !s.is_empty() => Ok((Strategy::Weights, Some(s.clone()))),
                _ => invalid("target_weights needs \"name\": the strategy column of quantops.target_weights to follow"),
            }
        }
        _ => invalid(format!("unknown strategy \"{name}\" (known: ma_cross, breakout, target_weights)")),
    }
}

/// The parameters of a strategy as stored with its result.
pub fn params_json(s: Strategy, weights: Option<&str>) -> Value {
    match s {
        Strategy::MaCross { fast, slow } => json!({ "fast": fast, "slow": slow }),
        Strategy::Breakout { window } => json!({ "window": window }),
        Strategy::Weights => json!({ "name": weights }),
    }
}

/// One parameter's values: a list, or {"from", "to", "step"} (step 1 by default).
fn values(v: &Value, key: &str) -> Result<Vec<usize>, SpecError> {
    let bad = || invalid(format!("grid \"{key}\" must be a list of whole numbers or {{\"from\": a, \"to\": b, \"step\": c}}"));
    let out: Vec<usize> = match v {
        Value::Array(a) => {
            let mut out = Vec::with_capacity(a.len());
            for x in a {
                match x.as_u64() {
                    Some(n) if (1..=10_000).contains(&n) => out.push(n as usize),
                    _ => return bad(),
                }
            }
            out
        }
        Value::Object(o) => {
            let get = |k: &str| o.get(k).and_then(Value::as_u64);
            if o.keys().any(|k| !["from", "to", "step"].contains(&k.as_str())) {
                return bad();
            }
            let (Some(from), Some(to)) = (get("from"), get("to")) else { return bad() };
            let step = match o.get("step") {
                None => 1,
                Some(_) => match get("step") {
                    Some(s) if s >= 1 => s,
                    _ => return bad(),
                },
            };
            if from < 1 || to > 10_000 || from > to {
                return invalid(format!("grid \"{key}\" needs 1 <= from <= to <= 10000"));
            }
            (from..=to).step_by(step as usize).map(|x| x as usize).collect()
        }
        _ => return bad(),
    };
    if out.is_empty() {
        return invalid(format!("grid \"{key}\" has no values"));
    }
    let mut out = out;
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// Every parameter set of a grid: for ma_cross each fast < slow pair of "fast" and "slow", for
/// breakout each "window".
pub fn grid(name: &str, g: &Value) -> Result<Vec<Strategy>, SpecError> {
    let Some(o) = g.as_object() else { return invalid("grid must be a JSON object") };
    let only = |keys: &[&str]| -> Result<(), SpecError> {
        match o.keys().find(|k| !keys.contains(&k.as_str())) {
            Some(k) => invalid(format!("the grid of {name} takes no parameter \"{k}\" (it takes {})", keys.join(", "))),
            None => Ok(()),
        }
    };
    let need = |k: &str| o.get(k).ok_or_else(|| SpecError::Invalid(format!("the grid of {name} needs \"{k}\"")));
    let out: Vec<Strategy> = match name {
        "ma_cross" => {
            only(&["fast", "slow"])?;
            let (f, s) = (values(need("fast")?, "fast")?, values(need("slow")?, "slow")?);
            if f.len().saturating_mul(s.len()) > 4 * MAX_GRID {
                return Err(SpecError::TooLarge(format!("the grid has more than {MAX_GRID} parameter sets")));
            }
            f.iter()
                .flat_map(|fast| s.iter().filter(move |slow| *slow > fast).map(move |slow| Strategy::MaCross { fast: *fast, slow: *slow }))
                .collect()
        }
        "breakout" => {
            only(&["window"])?;
            values(need("window")?, "window")?.into_iter().map(|window| Strategy::Breakout { window }).collect()
        }
        "target_weights" => return invalid("target_weights has no parameters to sweep; use run_backtest"),
        _ => return invalid(format!("unknown strategy \"{name}\" (known: ma_cross, breakout, target_weights)")),
    };
    if out.is_empty() {
        return invalid("the grid has no parameter set (ma_cross needs some fast < slow)");
    }
    if out.len() > MAX_GRID {
        return Err(SpecError::TooLarge(format!("the grid has {} parameter sets, more than {MAX_GRID}", out.len())));
    }
    Ok(out)
}

/// Accumulates the fingerprint of the data a backtest read.
pub struct Fingerprint(Sha256);

impl Default for Fingerprint {
    fn default() -> Self {
        Fingerprint(Sha256::new())
    }
}

impl Fingerprint {
    pub fn bars(&mut self, b: &super::engine::Bars, volume: &[f64]) {
        let h = &mut self.0;
        h.update((b.symbol.len() as u64).to_le_bytes());
        h.update(b.symbol.as_bytes());
        h.update((b.len() as u64).to_le_bytes());
        for i in 0..b.len() {
            h.update(b.ts[i].to_le_bytes());
            h.update(b.available_at[i].to_le_bytes());
            for x in [b.open[i], b.high[i], b.low[i], b.close[i], volume.get(i).copied().unwrap_or(0.0)] {
                h.update(x.to_bits().to_le_bytes());
            }
        }
    }

    pub fn weights(&mut self, symbol: &str, w: &[super::engine::TargetWeight]) {
        let h = &mut self.0;
        h.update(b"weights");
        h.update((symbol.len() as u64).to_le_bytes());
        h.update(symbol.as_bytes());
        h.update((w.len() as u64).to_le_bytes());
        for x in w {
            h.update(x.available_at.to_le_bytes());
            h.update(x.weight.to_bits().to_le_bytes());
        }
    }

    pub fn hex(self) -> String {
        hex(&self.0.finalize())
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The run id of a result: a hash of the engine's version, the strategy and its parameters, the
/// symbols, the options in canonical form, who ran it (their user id; results are per user)
/// and the fingerprint of the data read, and the model version it is linked to, if any. Same
/// inputs, same id: a rerun is idempotent; a changed bar makes a new run.
pub fn run_id(
    strategy: &str,
    params: &Value,
    symbols: &[String],
    options: &Value,
    user: Option<&str>,
    fingerprint: &str,
    model: Option<(&str, i32)>,
) -> String {
    let canonical = json!({
        "model": model,
        "engine": ENGINE,
        "strategy": strategy,
        "params": params,
        "symbols": symbols,
        "options": options,
        "user": user,
        "data": fingerprint,
    });
    let digest = Sha256::digest(canonical.to_string().as_bytes());
    format!("bt_{}", &hex(&digest)[..32])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_canonical_form() {
        let a = options(&json!({}), 1, "ma_cross").unwrap();
        let b = options(&json!({"execution": "next_open", "fees": 0, "init_cash": 100, "sizing": "all_in"}), 1, "ma_cross").unwrap();
        assert_eq!(a.canonical(), b.canonical());
        assert_eq!(a.config.sizing, Sizing::AllIn);
        assert_eq!(options(&json!({}), 4, "ma_cross").unwrap().config.sizing, Sizing::Weight(0.25));
        let ids: Vec<String> = [json!({}), json!({"fees": 0.001})]
            .iter()
            .map(|o| {
                run_id(
                    "ma_cross",
                    &json!({"fast": 5, "slow": 20}),
                    &["A".into()],
                    &options(o, 1, "ma_cross").unwrap().canonical(),
                    None,
                    "f",
                    None,
                )
            })
            .collect();
        assert_ne!(ids[0], ids[1]);
        assert!(ids[0].starts_with("bt_") && ids[0].len() == 35);
        // another user, other data: other ids
        let p = json!({"fast": 5, "slow": 20});
        let c = a.canonical();
        assert_ne!(
            run_id("ma_cross", &p, &["A".into()], &c, Some("u1"), "f", None),
            run_id("ma_cross", &p, &["A".into()], &c, Some("u2"), "f", None)
        );
        assert_ne!(run_id("ma_cross", &p, &["A".into()], &c, None, "f", None), run_id("ma_cross", &p, &["A".into()], &c, None, "g", None));
        // linked to a model version: another run than the same backtest unlinked
        assert_ne!(
            run_id("ma_cross", &p, &["A".into()], &c, None, "f", None),
            run_id("ma_cross", &p, &["A".into()], &c, None, "f", Some(("m", 1)))
        );
    }

    #[test]
    fn bad_options_say_what_is_wrong() {
        for (o, want) in [
            (json!({"fee": 0.1}), "unknown option \"fee\""),
            (json!({"execution": "same_close"}), "allow_same_bar"),
            (json!({"execution": "tomorrow"}), "next_open, next_close or same_close"),
            (json!({"direction": "up"}), "long_only or long_short"),
            (json!({"sizing": "notional"}), "needs \"notional\""),
            (json!({"fees": "0.1"}), "must be a number"),
            (json!({"periods_per_year": 0}), "periods_per_year"),
            (json!({"label": ""}), "label"),
            (json!([]), "JSON object"),
        ] {
            let e = options(&o, 1, "ma_cross").unwrap_err().to_string();
            assert!(e.contains(want), "{o}: {e}");
        }
        assert_eq!(
            options(&json!({"execution": "same_close", "allow_same_bar": true}), 1, "ma_cross").unwrap().config.execution,
            Execution::SameClose
        );
    }

    #[test]
    fn strategies_and_grids() {
        assert_eq!(strategy("ma_cross", &json!({"fast": 5, "slow": 20})).unwrap().0, Strategy::MaCross { fast: 5, slow: 20 });
        assert_eq!(strategy("target_weights", &json!({"name": "m"})).unwrap(), (Strategy::Weights, Some("m".into())));
        for (n, p, want) in [
            ("ma_cross", json!({"fast": 20, "slow": 5}), "fast < slow"),
            ("ma_cross", json!({"fast": 5}), "needs \"slow\""),
            ("ma_cross", json!({"fast": 5, "slow": 20, "x": 1}), "no parameter \"x\""),
            ("breakout", json!({"window": 0}), "needs \"window\""),
            ("momentum", json!({}), "unknown strategy"),
        ] {
            let e = strategy(n, &p).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        }
        assert_eq!(
            grid("ma_cross", &json!({"fast": {"from": 5, "to": 100, "step": 5}, "slow": {"from": 5, "to": 100, "step": 5}})).unwrap().len(),
            190
        );
        assert_eq!(grid("ma_cross", &json!({"fast": {"from": 2, "to": 100}, "slow": {"from": 2, "to": 100}})).unwrap().len(), 4851);
        assert_eq!(grid("breakout", &json!({"window": [10, 20, 20]})).unwrap().len(), 2);
        assert!(matches!(
            grid("ma_cross", &json!({"fast": {"from": 1, "to": 10000}, "slow": {"from": 1, "to": 10000}})),
            Err(SpecError::TooLarge(_))
        ));
        assert!(grid("ma_cross", &json!({"fast": [50], "slow": [10]})).unwrap_err().to_string().contains("no parameter set"));
        assert!(grid("ma_cross", &json!({"fast": "5"})).unwrap_err().to_string().contains("must be a list"));
    }
}
