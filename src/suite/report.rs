//! `results.md` and the bar charts of a suite: one table per environment (rows =
//! tiers, columns = agents, cells = normalised score mean ± std over seeds at the
//! headline target, plus the success rate for tasks that define success), and for
//! environments that differ only in their memory length, success against that length.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::entry::Entry;
use super::record::EntryRecord;
use super::spec::{EnvSpec, SuiteSpec};
use crate::eval::MeanStd;
use crate::plot::{write_bar_chart, write_line_chart, Bar, BarChart, LineChart};

/// The statistics of one table cell over the seeds recorded for it.
#[derive(Clone, Debug, PartialEq)]
pub struct Cell {
    /// Normalised score over seeds (each seed: the mean over its episodes).
    pub score: MeanStd,
    /// Mean success rate over seeds, for tasks that define success.
    pub success: Option<f64>,
    /// Seeds recorded.
    pub seeds: usize,
}

impl Cell {
    /// The cell of `records` at the target with index `target`, if any has it.
    pub fn of(records: &[&EntryRecord], target: usize) -> Option<Self> {
        let at: Vec<_> = records
            .iter()
            .filter_map(|r| r.eval.targets.get(target))
            .collect();
        let scores: Vec<f64> = at
            .iter()
            .filter_map(|t| t.normalised.map(|n| n.mean))
            .collect();
        if scores.is_empty() {
            return None;
        }
        let successes: Vec<f64> = at.iter().filter_map(|t| t.success_rate).collect();
        Some(Cell {
            score: MeanStd::of(&scores),
            success: (!successes.is_empty())
                .then(|| successes.iter().sum::<f64>() / successes.len() as f64),
            seeds: scores.len(),
        })
    }

    fn text(&self, all_seeds: usize) -> String {
        let mut s = format!("{:.1} ± {:.1}", self.score.mean, self.score.std);
        if let Some(rate) = self.success {
            let _ = write!(s, " (success {:.0}%)", 100.0 * rate);
        }
        if self.seeds < all_seeds {
            let _ = write!(s, " [{}/{all_seeds} seeds]", self.seeds);
        }
        s
    }
}

/// Writes `<out>/results.md` and `<out>/plots/<env>.png` (and `<env>-success.png`
/// where success is defined, `<family>-success-vs-memory.png` for families of memory
/// lengths) from the finished entries; returns the report's path.
pub fn write_report(
    spec: &SuiteSpec,
    out: &Path,
    done: &[(Entry, EntryRecord)],
    unfinished: &[Unfinished],
) -> anyhow::Result<PathBuf> {
    let mut md = String::new();
    let total = super::entry::entries(spec).len();
    let _ = writeln!(md, "# Suite `{}`\n", spec.name);
    let _ = writeln!(
        md,
        "{} of {total} entries done. flowrl {}; suite config [suite.toml](suite.toml); \
         each entry's resolved experiment config, dataset, training and evaluation are in \
         `results/<env>/<tier>/<agent>/seed<N>.json`.\n",
        done.len(),
        env!("CARGO_PKG_VERSION")
    );
    let _ = writeln!(
        md,
        "Cells: normalised score 100 (R − R_random) / (R_expert − R_random) at the headline \
         target (the environment's first), each seed's mean over {} episodes (evaluation seed \
         {}), then mean ± std over the seeds; success rate for tasks that define success; \
         `[k/n seeds]` while seeds are missing. The `dataset` column is the behaviour's own \
         average normalised score.\n",
        spec.eval_episodes, spec.eval_seed
    );
    unfinished_section(&mut md, unfinished);
    let plots = out.join("plots");
    memory_section(&mut md, spec, done, &plots)?;
    for env in &spec.envs {
        env_section(&mut md, spec, env, done, &plots)?;
    }
    let path = out.join("results.md");
    crate::atomic::write_bytes_atomic(&path, md.as_bytes())?;
    Ok(path)
}

/// An entry that was started and has no result.
#[derive(Clone, Debug, PartialEq)]
pub struct Unfinished {
    /// The entry's id.
    pub id: String,
    /// `failed`, `interrupted` or `running`.
    pub status: &'static str,
    /// The error of its last failed attempt.
    pub error: Option<String>,
    /// Its Slurm task's log, relative to the output folder.
    pub log: Option<String>,
}

/// The table of unfinished entries, if any.
fn unfinished_section(md: &mut String, unfinished: &[Unfinished]) {
    if unfinished.is_empty() {
        return;
    }
    let _ = writeln!(
        md,
        "## Unfinished entries\n\nRerunning the suite (or `flowrl suite slurm --submit`) \
         continues them.\n\n| entry | status | error | log |\n|---|---|---|---|"
    );
    for u in unfinished {
        let error = u.error.as_deref().map_or(String::new(), |e| {
            e.lines().next().unwrap_or("").replace('|', "\\|")
        });
        let log = u
            .log
            .as_deref()
            .map_or(String::new(), |l| format!("[{l}]({l})"));
        let _ = writeln!(md, "| {} | {} | {error} | {log} |", u.id, u.status);
    }
    md.push('\n');
}

/// The recorded results of `agent` on `env`'s `tier` dataset (one per seed).
fn records<'a>(
    done: &'a [(Entry, EntryRecord)],
    env: &str,
    tier: &str,
    agent: &str,
) -> Vec<&'a EntryRecord> {
    done.iter()
        .map(|(_, r)| r)
        .filter(|r| r.env == env && r.tier == tier && r.agent == agent)
        .collect()
}

/// An environment id's family and memory length: `TMaze-Passive-L250` is
/// `("TMaze-Passive", 250)`; `None` for ids without a `-L<digits>` suffix.
fn memory_length(id: &str) -> Option<(&str, u64)> {
    let (family, digits) = id.rsplit_once("-L")?;
    let length = digits
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| digits.parse().ok())??;
    (!family.is_empty()).then_some((family, length))
}

/// The families of the suite's environments that differ only in their memory length
/// (at least two lengths), each with its environments sorted by length.
fn memory_families(spec: &SuiteSpec) -> Vec<(&str, Vec<(u64, &EnvSpec)>)> {
    let mut families: Vec<(&str, Vec<(u64, &EnvSpec)>)> = Vec::new();
    for env in &spec.envs {
        let Some((family, length)) = memory_length(&env.id) else {
            continue;
        };
        match families.iter_mut().find(|(f, _)| *f == family) {
            Some((_, members)) => members.push((length, env)),
            None => families.push((family, vec![(length, env)])),
        }
    }
    families.retain(|(_, members)| members.len() >= 2);
    for (_, members) in &mut families {
        members.sort_by_key(|(length, _)| *length);
    }
    families
}

/// "Success rate against memory length": for each family of environments that differ
/// only in their memory length, a table (rows = lengths, columns = agents, cells = the
/// success rate at the headline target, mean over seeds) and a line chart
/// `plots/<family>-success-vs-memory.png` (one line per agent and tier).
fn memory_section(
    md: &mut String,
    spec: &SuiteSpec,
    done: &[(Entry, EntryRecord)],
    plots: &Path,
) -> anyhow::Result<()> {
    let families = memory_families(spec);
    let success = |env: &str, tier: &str, agent: &str| -> Option<f64> {
        Cell::of(&records(done, env, tier, agent), 0)?.success
    };
    let mut header = false;
    for (family, members) in families {
        let mut tiers: Vec<&str> = Vec::new();
        for (_, env) in &members {
            for t in &env.tiers {
                if !tiers.contains(&t.as_str()) {
                    tiers.push(t);
                }
            }
        }
        let mut lines = Vec::new();
        for tier in &tiers {
            for agent in &spec.agents {
                let points: Vec<(f64, f64)> = members
                    .iter()
                    .filter_map(|(length, env)| {
                        success(&env.id, tier, &agent.name).map(|s| (*length as f64, 100.0 * s))
                    })
                    .collect();
                let label = if tiers.len() > 1 {
                    format!("{} ({tier})", agent.name)
                } else {
                    agent.name.clone()
                };
                if !points.is_empty() {
                    lines.push((label, points));
                }
            }
        }
        if lines.is_empty() {
            continue;
        }
        if !header {
            let _ = writeln!(md, "## Success rate against memory length\n");
            let _ = writeln!(
                md,
                "Environments that differ only in their memory length (`-L<length>`): success \
                 rate at the headline target, mean over seeds.\n"
            );
            header = true;
        }
        let names: Vec<&str> = spec.agents.iter().map(|a| a.name.as_str()).collect();
        let _ = writeln!(md, "### {family}\n");
        for tier in &tiers {
            let _ = writeln!(md, "| {tier}: memory length | {} |", names.join(" | "));
            let _ = writeln!(md, "| ---: |{}", " ---: |".repeat(names.len()));
            for (length, env) in &members {
                let cells: Vec<String> = names
                    .iter()
                    .map(|a| {
                        success(&env.id, tier, a)
                            .map_or("–".into(), |s| format!("{:.0}%", 100.0 * s))
                    })
                    .collect();
                let _ = writeln!(md, "| {length} | {} |", cells.join(" | "));
            }
            let _ = writeln!(md);
        }
        let mut chart = LineChart::new(
            &format!("{family}: success rate against memory length"),
            "memory length L",
            "success rate (%)",
        )
        .y_range(0.0, 100.0);
        for (label, points) in lines {
            chart = chart.series(&label, points);
        }
        let file = format!("{family}-success-vs-memory.png");
        write_line_chart(&plots.join(&file), &chart)?;
        let _ = writeln!(
            md,
            "![{family} success against memory length](plots/{file})\n"
        );
    }
    Ok(())
}

fn env_section(
    md: &mut String,
    spec: &SuiteSpec,
    env: &EnvSpec,
    done: &[(Entry, EntryRecord)],
    plots: &Path,
) -> anyhow::Result<()> {
    let records_of = |tier: &str, agent: &str| records(done, &env.id, tier, agent);
    let seeds = spec.seeds.len();
    let names: Vec<&str> = spec.agents.iter().map(|a| a.name.as_str()).collect();
    let _ = writeln!(md, "## {}\n", env.id);
    let _ = writeln!(md, "Headline target {}.\n", env.targets[0]);
    if let Some(source) = env.warm_start {
        let _ = writeln!(
            md,
            "Curriculum (`warm_start`): each entry starts from the trained model of the \
             same agent, tier and seed on {}, then trains as configured.\n",
            spec.envs[source].id
        );
    }
    let _ = writeln!(md, "| tier | {} | dataset |", names.join(" | "));
    let _ = writeln!(md, "| --- |{} ---: |", " ---: |".repeat(names.len()));
    let mut series: Vec<(Vec<Bar>, Vec<Bar>)> = vec![(Vec::new(), Vec::new()); names.len()];
    let mut any = false;
    let mut has_success = false;
    for tier in &env.tiers {
        let mut row = vec![tier.clone()];
        let mut behaviour = None;
        for (a, name) in names.iter().enumerate() {
            let records = records_of(tier, name);
            behaviour =
                behaviour.or_else(|| records.first().and_then(|r| r.dataset.normalised_mean));
            let cell = Cell::of(&records, 0);
            row.push(cell.as_ref().map_or("–".into(), |c| c.text(seeds)));
            let (score, success) = &mut series[a];
            match &cell {
                Some(c) => {
                    any = true;
                    score.push(Bar::with_std(c.score.mean, c.score.std));
                    has_success |= c.success.is_some();
                    success.push(Bar::new(100.0 * c.success.unwrap_or(0.0)));
                }
                None => {
                    score.push(Bar::new(0.0));
                    success.push(Bar::new(0.0));
                }
            }
        }
        row.push(behaviour.map_or("–".into(), |b| format!("{b:.1}")));
        let _ = writeln!(md, "| {} |", row.join(" | "));
    }
    let _ = writeln!(md);
    if !any {
        let _ = writeln!(md, "No results yet.\n");
        return Ok(());
    }
    let tiers: Vec<&str> = env.tiers.iter().map(String::as_str).collect();
    let mut chart = BarChart::new(
        &format!("{}: normalised score at target {}", env.id, env.targets[0]),
        "dataset tier",
        "normalised score (mean ± std over seeds)",
        &tiers,
    );
    for (name, (score, _)) in names.iter().zip(&series) {
        chart = chart.series(name, score.clone());
    }
    write_bar_chart(&plots.join(format!("{}.png", env.id)), &chart)?;
    let _ = writeln!(md, "![{}](plots/{}.png)\n", env.id, env.id);
    if has_success {
        let mut chart = BarChart::new(
            &format!("{}: success rate at target {}", env.id, env.targets[0]),
            "dataset tier",
            "success rate (%)",
            &tiers,
        );
        for (name, (_, success)) in names.iter().zip(&series) {
            chart = chart.series(name, success.clone());
        }
        write_bar_chart(&plots.join(format!("{}-success.png", env.id)), &chart)?;
        let _ = writeln!(md, "![{} success](plots/{}-success.png)\n", env.id, env.id);
    }
    if env.targets.len() > 1 {
        let _ = writeln!(
            md,
            "Every target (normalised score, mean ± std over seeds):\n"
        );
        let _ = writeln!(md, "| tier | target | {} |", names.join(" | "));
        let _ = writeln!(md, "| --- | ---: |{}", " ---: |".repeat(names.len()));
        for tier in &env.tiers {
            for (t, target) in env.targets.iter().enumerate() {
                let cells: Vec<String> = names
                    .iter()
                    .map(|name| {
                        Cell::of(&records_of(tier, name), t).map_or("–".into(), |c| c.text(seeds))
                    })
                    .collect();
                let _ = writeln!(md, "| {tier} | {target} | {} |", cells.join(" | "));
            }
        }
        let _ = writeln!(md);
    }
    let _ = writeln!(
        md,
        "Cost per entry (mean seconds; CPU = all threads, steadier than wall-clock on a shared machine):\n"
    );
    let _ = writeln!(
        md,
        "| agent | train | train CPU | eval | eval CPU | entries |"
    );
    let _ = writeln!(md, "| --- | ---: | ---: | ---: | ---: | ---: |");
    for name in &names {
        let rs: Vec<&EntryRecord> = done
            .iter()
            .map(|(_, r)| r)
            .filter(|r| r.env == env.id && r.agent == *name)
            .collect();
        if rs.is_empty() {
            continue;
        }
        let n = rs.len() as f64;
        let cpu = |f: &dyn Fn(&EntryRecord) -> Option<f64>| {
            rs.iter()
                .map(|r| f(r))
                .sum::<Option<f64>>()
                .map_or("–".into(), |s| format!("{:.0}", s / n))
        };
        let _ = writeln!(
            md,
            "| {name} | {:.0} | {} | {:.0} | {} | {} |",
            rs.iter().map(|r| r.train.seconds).sum::<f64>() / n,
            cpu(&|r| r.train.cpu_seconds),
            rs.iter().map(|r| r.eval_seconds).sum::<f64>() / n,
            cpu(&|r| r.eval_cpu_seconds),
            rs.len()
        );
    }
    let _ = writeln!(md);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::memory_length;

    #[test]
    fn memory_length_is_the_numeric_l_suffix() {
        assert_eq!(
            memory_length("TMaze-Passive-L250"),
            Some(("TMaze-Passive", 250))
        );
        assert_eq!(memory_length("KeyToDoor-L60"), Some(("KeyToDoor", 60)));
        assert_eq!(memory_length("Pendulum-v1"), None);
        assert_eq!(memory_length("Foo-Lx"), None);
        assert_eq!(memory_length("Foo-L"), None);
        assert_eq!(memory_length("-L5"), None);
    }
}
