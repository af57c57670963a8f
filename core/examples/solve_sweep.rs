//! The optimizer on random instances of the benchmark's three shapes (seeds 11-18 by
//! default), beyond the one instance each that `cargo bench --bench optimize` times: the
//! plan, the continuous objective, exact evaluations (KKT and repair) and the median of five
//! solves. `cargo run --release -p derm-core --example solve_sweep [-- FIRST_SEED LAST_SEED]`.

use derm_core::generate::instance::{self, Spec};
use derm_core::optimize::eval::Kind;
use derm_core::optimize::{self, Policy, Problem, Start, integer, kkt};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<u64> = std::env::args().skip(1).map(|a| a.parse()).collect::<Result<_, _>>()?;
    let (first, last) = match args[..] {
        [] => (11, 18),
        [a, b] => (a, b),
        _ => return Err("usage: solve_sweep [FIRST_SEED LAST_SEED]".into()),
    };
    for (name, spec, load) in instance::benchmarks() {
        let (mut replicas, mut objective, mut evaluations, mut ms) = (0u64, 0.0, 0u32, 0.0);
        for seed in first..=last {
            let inst = Spec { seed, ..spec.clone() }.generate();
            let p = Problem::new(&inst.input(load))?;
            let w = p.weights();
            let sol = kkt::solve(&p, Kind::Weighted, &w, Start::Paired)?;
            let int = integer::plan(&p, Kind::Weighted, &w, &kkt::Space::new(&p), &sol.rates, Some(&sol.gradient));
            let mut times = Vec::new();
            let mut total = 0;
            for _ in 0..5 {
                let t = std::time::Instant::now();
                total = optimize::solve(&p, Policy::Derm, Start::Paired)?.total_replicas;
                times.push(t.elapsed().as_secs_f64() * 1e3);
            }
            times.sort_by(f64::total_cmp);
            let ev = sol.evaluations.total() + int.evaluations;
            println!(
                "{name} seed {seed}: {total} replicas, objective {:.1}, {ev} evaluations ({} coarse), median {:.2} ms",
                sol.objective, sol.evaluations.coarse, times[2]
            );
            (replicas, objective, evaluations, ms) =
                (replicas + total, objective + sol.objective, evaluations + ev, ms + times[2]);
        }
        println!(
            "{name} total: {replicas} replicas, objective {objective:.1}, {evaluations} evaluations, medians {ms:.1} ms"
        );
    }
    Ok(())
}
