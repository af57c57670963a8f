//! `derm predict --evaluate --sweep-window 1..10`: the accuracy of every model for each
//! history length l (the paper's window-size comparison). The LSTMs are trained with
//! `--window l`, the moving average spans l windows and ARIMA has order l; the other
//! baselines do not read a history length, so they are scored once and repeated.

use std::collections::BTreeMap;

use super::{Args, NO_LSTM, model_names, model_row};
use crate::graph::Window;
use crate::predict::evaluate::Row;

/// Most history lengths swept.
const MAX_LENGTH: u64 = 64;

/// History lengths, ascending, without repeats.
#[derive(Debug, Clone, PartialEq)]
pub struct Lengths(pub Vec<u64>);

/// `A..B` (both included) or a comma-separated list, each in 1..=64.
pub fn parse_lengths(s: &str) -> Result<Lengths, String> {
    let bad = || format!("{s:?}: expected A..B or a list such as 1,2,5 (lengths 1 to {MAX_LENGTH})");
    let num = |t: &str| t.trim().parse::<u64>().ok().filter(|n| (1..=MAX_LENGTH).contains(n)).ok_or_else(bad);
    let mut out: Vec<u64> = match s.split_once("..") {
        Some((a, b)) => {
            let (a, b) = (num(a)?, num(b)?);
            if a > b {
                return Err(bad());
            }
            (a..=b).collect()
        }
        None => s.split(',').map(num).collect::<Result<_, _>>()?,
    };
    out.sort_unstable();
    out.dedup();
    Ok(Lengths(out))
}

/// Whether a model reads a history length.
fn uses_length(name: &str) -> bool {
    matches!(name, "lstm" | "lstm-noattn" | "ma" | "arima")
}

/// Runs the sweep and prints it (markdown, or JSON with `--json`).
pub fn run(args: &Args, series: &[Vec<Window>], lengths: &Lengths) -> anyhow::Result<()> {
    let mut table: BTreeMap<String, BTreeMap<u64, Row>> = BTreeMap::new();
    let mut order = Vec::new();
    for name in model_names(args) {
        let mut once = None;
        for &l in &lengths.0 {
            let row = if uses_length(name) {
                let lstm = super::LstmArgs { window: l, ..args.lstm.clone() };
                model_row(args, &lstm, series, name, Some(l as usize))?
            } else {
                if once.is_none() {
                    once = model_row(args, &args.lstm, series, name, None)?;
                }
                once.clone()
            };
            let Some(row) = row else {
                eprintln!("note: {name}: {NO_LSTM}");
                break;
            };
            eprintln!("l = {l}: {name} {:.2}%", 100.0 * row.all.accuracy);
            table.entry(name.to_owned()).or_default().insert(l, row);
        }
        if table.contains_key(name) {
            order.push(name);
        }
    }
    if args.json {
        let models: BTreeMap<&str, BTreeMap<String, serde_json::Value>> = table
            .iter()
            .map(|(name, by_l)| {
                let cells = by_l
                    .iter()
                    .map(|(l, r)| {
                        let cell =
                            serde_json::json!({"accuracy": r.all.accuracy, "kl": r.all.kl, "changed": r.changed});
                        (l.to_string(), cell)
                    })
                    .collect();
                (name.as_str(), cells)
            })
            .collect();
        let out = serde_json::json!({"windows": lengths.0, "models": models, "train_fraction": args.train_fraction});
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print!("{}", markdown(&order, &table, &lengths.0));
    }
    Ok(())
}

/// Accuracy by model (rows) and history length (columns); `*` marks models that read none.
fn markdown(order: &[&str], table: &BTreeMap<String, BTreeMap<u64, Row>>, lengths: &[u64]) -> String {
    let mut s = String::from("| model |");
    for l in lengths {
        s.push_str(&format!(" l = {l} |"));
    }
    s.push_str("\n|---|");
    s.push_str(&"---:|".repeat(lengths.len()));
    s.push('\n');
    for name in order {
        let mark = if uses_length(name) { "" } else { " *" };
        s.push_str(&format!("| {name}{mark} |"));
        for l in lengths {
            match table[*name].get(l) {
                Some(r) => s.push_str(&format!(" {:.2}% |", 100.0 * r.all.accuracy)),
                None => s.push_str(" |"),
            }
        }
        s.push('\n');
    }
    s.push_str("\n\\* does not read a history length: scored once.\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_are_ranges_or_lists_and_bad_ones_name_the_value() {
        assert_eq!(parse_lengths("1..4").unwrap().0, [1, 2, 3, 4]);
        assert_eq!(parse_lengths("5,1,5,2").unwrap().0, [1, 2, 5]);
        for bad in ["0..3", "4..2", "1..65", "a", "1,,2", ""] {
            let e = parse_lengths(bad).unwrap_err();
            assert!(e.contains(&format!("{bad:?}")), "{e}");
        }
    }
}
