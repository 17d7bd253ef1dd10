//! Pure rules for the embedding column and its IVFFlat index.

/// pgvector's IVFFlat indexes vectors of at most 2000 dimensions.
pub const MAX_DIMS: i32 = 2000;
/// pgvector's limit on IVFFlat lists.
pub const MAX_LISTS: i32 = 32768;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    Cosine,
    L2,
    InnerProduct,
}

impl Metric {
    pub fn parse(s: &str) -> Option<Metric> {
        match s {
            "cosine" => Some(Metric::Cosine),
            "l2" => Some(Metric::L2),
            "ip" => Some(Metric::InnerProduct),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Metric::Cosine => "cosine",
            Metric::L2 => "l2",
            Metric::InnerProduct => "ip",
        }
    }
    /// pgvector's operator class for this metric.
    pub fn opclass(self) -> &'static str {
        match self {
            Metric::Cosine => "vector_cosine_ops",
            Metric::L2 => "vector_l2_ops",
            Metric::InnerProduct => "vector_ip_ops",
        }
    }
}

/// pgvector's guidance: rows / 1000 up to a million rows, sqrt(rows) beyond; at least 1.
pub fn recommended_lists(rows: i64) -> i32 {
    let rows = rows.max(0);
    let lists = if rows <= 1_000_000 { rows / 1000 } else { (rows as f64).sqrt() as i64 };
    lists.clamp(1, MAX_LISTS as i64) as i32
}

/// pgvector's guidance for probes: sqrt(lists), at least 1.
pub fn recommended_probes(lists: i32) -> i32 {
    ((lists.max(1) as f64).sqrt().round() as i32).max(1)
}

#[derive(Debug, Clone, PartialEq)]
pub enum ConfigProblem {
    Dims(i32),
    Lists(i32),
    Metric(String),
}

pub fn validate(dims: i32, lists: Option<i32>, metric: &str) -> Result<(i32, Option<i32>, Metric), ConfigProblem> {
    if !(1..=MAX_DIMS).contains(&dims) {
        return Err(ConfigProblem::Dims(dims));
    }
    if let Some(l) = lists {
        if !(1..=MAX_LISTS).contains(&l) {
            return Err(ConfigProblem::Lists(l));
        }
    }
    let m = Metric::parse(metric).ok_or_else(|| ConfigProblem::Metric(metric.to_string()))?;
    Ok((dims, lists, m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_follow_pgvector_guidance() {
        assert_eq!(recommended_lists(0), 1);
        assert_eq!(recommended_lists(999), 1);
        assert_eq!(recommended_lists(200_000), 200);
        assert_eq!(recommended_lists(1_000_000), 1000);
        assert_eq!(recommended_lists(4_000_000), 2000);
        assert_eq!(recommended_lists(i64::MAX), MAX_LISTS);
        assert_eq!(recommended_lists(-5), 1);
    }

    #[test]
    fn probes_are_sqrt_lists() {
        assert_eq!(recommended_probes(1), 1);
        assert_eq!(recommended_probes(100), 10);
        assert_eq!(recommended_probes(200), 14);
        assert_eq!(recommended_probes(0), 1);
    }

    #[test]
    fn validation_rejects_what_pgvector_would() {
        assert_eq!(validate(384, None, "cosine").unwrap().2, Metric::Cosine);
        assert_eq!(validate(0, None, "cosine"), Err(ConfigProblem::Dims(0)));
        assert_eq!(validate(2001, None, "l2"), Err(ConfigProblem::Dims(2001)));
        assert_eq!(validate(3, Some(0), "l2"), Err(ConfigProblem::Lists(0)));
        assert_eq!(validate(3, Some(40000), "l2"), Err(ConfigProblem::Lists(40000)));
        assert_eq!(validate(3, None, "dot"), Err(ConfigProblem::Metric("dot".into())));
        assert_eq!(validate(3, None, "ip").unwrap().2.opclass(), "vector_ip_ops");
    }
}
