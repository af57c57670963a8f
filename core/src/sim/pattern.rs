//! Time-varying request rates: constant, steps, diurnal, and a series replayed from CSV.
//!
//! Times are seconds on the scenario clock (the measured run starts at 0; the profiling
//! phase runs before it, at negative times). Arrivals are drawn by thinning a Poisson
//! process at [`Pattern::max_rps`] (Lewis and Shedler), which is exact for any rate function
//! bounded by it.

use std::f64::consts::PI;
use std::path::{Path, PathBuf};

use super::Error;

/// Entry request rate as a function of time.
#[derive(Debug, Clone, PartialEq)]
pub enum Pattern {
    /// The same rate throughout.
    Constant { rps: f64 },
    /// Piecewise constant: `(from_s, rps)` sorted by time; before the first step, its rate.
    Steps { steps: Vec<(f64, f64)> },
    /// `mean + amplitude * sin(2 pi (t - phase_s) / period_s)` with `mean = (min + max) / 2`:
    /// starts at the mean, rising.
    Diurnal { min_rps: f64, max_rps: f64, period_s: f64, phase_s: f64 },
    /// A replayed series `(time_s, rps)`, linearly interpolated, held flat outside its range.
    Series { points: Vec<(f64, f64)> },
}

fn invalid(field: &str, value: impl ToString, expected: &'static str) -> Error {
    Error::Invalid { field: field.to_owned(), value: value.to_string(), expected }
}

fn rate_ok(field: &str, rps: f64) -> Result<(), Error> {
    if rps.is_finite() && rps >= 0.0 { Ok(()) } else { Err(invalid(field, rps, "a finite rate >= 0 (requests/s)")) }
}

impl Pattern {
    /// Check every number; the pattern must have a positive rate somewhere.
    pub fn validate(&self) -> Result<(), Error> {
        match self {
            Pattern::Constant { rps } => rate_ok("pattern.rps", *rps)?,
            Pattern::Steps { steps } | Pattern::Series { points: steps } => {
                if steps.is_empty() {
                    return Err(invalid("pattern", "no points", "at least one (time_s, rps) point"));
                }
                for (i, (t, r)) in steps.iter().enumerate() {
                    if !t.is_finite() {
                        return Err(invalid(&format!("pattern[{i}].time_s"), t, "a finite time"));
                    }
                    rate_ok(&format!("pattern[{i}].rps"), *r)?;
                }
                if steps.windows(2).any(|w| w[0].0 >= w[1].0) {
                    return Err(invalid("pattern.time_s", "not ascending", "strictly ascending times"));
                }
            }
            Pattern::Diurnal { min_rps, max_rps, period_s, phase_s } => {
                rate_ok("pattern.min_rps", *min_rps)?;
                rate_ok("pattern.max_rps", *max_rps)?;
                if min_rps > max_rps {
                    return Err(invalid("pattern.min_rps", min_rps, "a rate <= max_rps"));
                }
                if !(period_s.is_finite() && *period_s > 0.0) {
                    return Err(invalid("pattern.period_s", period_s, "a period > 0"));
                }
                if !phase_s.is_finite() {
                    return Err(invalid("pattern.phase_s", phase_s, "a finite time"));
                }
            }
        }
        if self.max_rps() <= 0.0 {
            return Err(invalid("pattern", "all rates 0", "a positive rate somewhere"));
        }
        Ok(())
    }

    /// Rate at time `t_s`, requests/s.
    pub fn rps(&self, t_s: f64) -> f64 {
        match self {
            Pattern::Constant { rps } => *rps,
            Pattern::Steps { steps } => {
                let i = steps.partition_point(|(from, _)| *from <= t_s);
                steps[i.saturating_sub(1)].1
            }
            Pattern::Diurnal { min_rps, max_rps, period_s, phase_s } => {
                let mean = 0.5 * (min_rps + max_rps);
                let amp = 0.5 * (max_rps - min_rps);
                mean + amp * (2.0 * PI * (t_s - phase_s) / period_s).sin()
            }
            Pattern::Series { points } => {
                let i = points.partition_point(|(t, _)| *t <= t_s);
                if i == 0 {
                    return points[0].1;
                }
                if i == points.len() {
                    return points[i - 1].1;
                }
                let (t0, r0) = points[i - 1];
                let (t1, r1) = points[i];
                r0 + (r1 - r0) * (t_s - t0) / (t1 - t0)
            }
        }
    }

    /// An upper bound of the rate at all times (the thinning rate).
    pub fn max_rps(&self) -> f64 {
        match self {
            Pattern::Constant { rps } => *rps,
            Pattern::Steps { steps } | Pattern::Series { points: steps } => {
                steps.iter().map(|s| s.1).fold(0.0, f64::max)
            }
            Pattern::Diurnal { max_rps, .. } => *max_rps,
        }
    }

    /// Largest rate over `[from_s, to_s]`, evaluated on a 1 s grid plus both ends.
    pub fn peak_rps(&self, from_s: f64, to_s: f64) -> f64 {
        let steps = ((to_s - from_s).max(0.0).ceil() as usize).min(1_000_000);
        (0..=steps).map(|k| self.rps((from_s + k as f64).min(to_s))).fold(self.rps(to_s), f64::max)
    }

    /// Mean rate over `[from_s, to_s]` (1 s grid, midpoints).
    pub fn mean_rps(&self, from_s: f64, to_s: f64) -> f64 {
        let n = ((to_s - from_s).ceil() as usize).max(1);
        let dt = (to_s - from_s) / n as f64;
        (0..n).map(|k| self.rps(from_s + (k as f64 + 0.5) * dt)).sum::<f64>() / n as f64
    }

    /// Parse the command-line form: `constant:RPS`, `steps:T=RPS,T=RPS,...`,
    /// `diurnal:MIN,MAX,PERIOD_S` or `csv:FILE` (columns `time_s,rps`).
    pub fn parse(text: &str) -> Result<Self, Error> {
        let field = "--pattern";
        let (kind, rest) = text.split_once(':').ok_or_else(|| {
            invalid(field, text, "constant:RPS | steps:T=RPS,... | diurnal:MIN,MAX,PERIOD_S | csv:FILE")
        })?;
        let num = |s: &str| -> Result<f64, Error> {
            s.trim().parse::<f64>().map_err(|_| invalid(field, format!("`{s}` in {text}"), "a number"))
        };
        let pattern = match kind {
            "constant" => Pattern::Constant { rps: num(rest)? },
            "steps" => {
                let steps = rest
                    .split(',')
                    .map(|p| {
                        let (t, r) = p.split_once('=').ok_or_else(|| invalid(field, p, "T=RPS"))?;
                        Ok((num(t)?, num(r)?))
                    })
                    .collect::<Result<Vec<_>, Error>>()?;
                Pattern::Steps { steps }
            }
            "diurnal" => {
                let parts: Vec<&str> = rest.split(',').collect();
                if parts.len() != 3 {
                    return Err(invalid(field, text, "diurnal:MIN,MAX,PERIOD_S"));
                }
                Pattern::Diurnal {
                    min_rps: num(parts[0])?,
                    max_rps: num(parts[1])?,
                    period_s: num(parts[2])?,
                    phase_s: 0.0,
                }
            }
            "csv" => Pattern::from_csv(Path::new(rest))?,
            _ => return Err(invalid(field, kind, "one of constant, steps, diurnal, csv")),
        };
        pattern.validate()?;
        Ok(pattern)
    }

    /// Read a rate series from a CSV file with named columns `time_s` and `rps` (any order,
    /// other columns ignored).
    pub fn from_csv(path: &Path) -> Result<Self, Error> {
        let io = |source: std::io::Error| Error::Io { path: path.to_owned(), source };
        let file = std::fs::File::open(path).map_err(io)?;
        Pattern::read_csv(file, path)
    }

    /// [`Pattern::from_csv`] on any reader; `path` names the input in errors.
    pub fn read_csv(reader: impl std::io::Read, path: &Path) -> Result<Self, Error> {
        let mut rdr = csv::ReaderBuilder::new().trim(csv::Trim::All).from_reader(reader);
        let csv_err = |line: u64, detail: String| Error::Csv { path: PathBuf::from(path), line, detail };
        let headers = rdr.headers().map_err(|e| csv_err(1, e.to_string()))?.clone();
        let column = |name: &'static str| {
            headers
                .iter()
                .position(|h| h == name)
                .ok_or_else(|| Error::MissingColumn { path: path.to_owned(), column: name })
        };
        let (ti, ri) = (column("time_s")?, column("rps")?);
        let mut points = Vec::new();
        for (k, rec) in rdr.records().enumerate() {
            let line = k as u64 + 2;
            let rec = rec.map_err(|e| csv_err(line, e.to_string()))?;
            let get = |i: usize, name: &str| -> Result<f64, Error> {
                let v = rec.get(i).unwrap_or("");
                v.parse::<f64>().map_err(|_| csv_err(line, format!("{name}: `{v}` is not a number")))
            };
            points.push((get(ti, "time_s")?, get(ri, "rps")?));
        }
        let pattern = Pattern::Series { points };
        pattern.validate().map_err(|e| csv_err(0, e.to_string()))?;
        Ok(pattern)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        let d = Pattern::Diurnal { min_rps: 10.0, max_rps: 30.0, period_s: 100.0, phase_s: 0.0 };
        assert!((d.rps(0.0) - 20.0).abs() < 1e-9);
        assert!((d.rps(25.0) - 30.0).abs() < 1e-9);
        assert!((d.peak_rps(0.0, 100.0) - 30.0).abs() < 1e-9);
        let s = Pattern::parse("steps:0=5,10=20").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((s.rps(-1.0), s.rps(9.9), s.rps(10.0)), (5.0, 5.0, 20.0));
        let c = Pattern::Series { points: vec![(0.0, 0.0), (10.0, 10.0)] };
        assert!((c.rps(2.5) - 2.5).abs() < 1e-12 && c.rps(50.0) == 10.0);
    }

    #[test]
    fn csv_columns_by_name() {
        let p = Pattern::read_csv("rps,time_s\n5,0\n7,60\n".as_bytes(), Path::new("x.csv"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.rps(60.0), 7.0);
        let err = Pattern::read_csv("time_s,load\n0,5\n".as_bytes(), Path::new("x.csv")).unwrap_err();
        assert!(err.to_string().contains("`rps`"), "{err}");
        let err = Pattern::read_csv("time_s,rps\n0,five\n".as_bytes(), Path::new("x.csv")).unwrap_err();
        assert!(err.to_string().contains("x.csv:2"), "{err}");
    }

    #[test]
    fn bad_patterns_name_the_field() {
        assert!(Pattern::parse("constant:-1").unwrap_err().to_string().contains("pattern.rps"));
        assert!(Pattern::parse("wave:1").unwrap_err().to_string().contains("--pattern"));
        assert!(Pattern::parse("diurnal:5,1,60").unwrap_err().to_string().contains("min_rps"));
    }
}
