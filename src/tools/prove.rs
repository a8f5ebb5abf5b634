//! `unsandbox smoke`: proves the languages of pools on this host, the way
//! the agent does before it serves them (one fresh container per pool, every
//! smoke test of every language), and prints the per-language table:
//! language, version, compile ms, run ms, pass. As Markdown it is the
//! README's language table.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::{Args, ValueEnum};

use crate::agent::desired::{self, container_hash};
use crate::agent::launcher::{self, Placement};
use crate::agent::smoke::{self, LanguageCheck};
use crate::agent::{image, keys};
use crate::crd::LanguageSpec;

#[derive(Debug, Args)]
pub struct SmokeArgs {
    /// ExecutorPool and LanguageImage YAML files or folders.
    #[arg(
        long = "config",
        short = 'c',
        env = "UNSANDBOX_CONFIG",
        value_delimiter = ',',
        required = true
    )]
    pub config: Vec<PathBuf>,
    /// Only this pool (`namespace/name` or `name`).
    #[arg(long)]
    pub pool: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Folder with `build.sh` and recipes, to build a missing image; `none` disables builds.
    #[arg(long, env = "UNSANDBOX_IMAGES_DIR", default_value = "images")]
    pub images_dir: String,
    /// LXD storage pool for the container's root disk.
    #[arg(long, env = "UNSANDBOX_STORAGE_POOL", default_value = "unsandbox")]
    pub storage_pool: String,
    #[command(flatten)]
    pub lxd: crate::settings::LxdArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns.
    Text,
    /// A Markdown table (the README's language table).
    Markdown,
}

/// One row of the table.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub language: String,
    pub aliases: Vec<String>,
    pub version: String,
    pub compile_ms: Option<u64>,
    pub run_ms: u64,
    pub passed: bool,
    pub error: Option<String>,
}

/// Table rows from a pool's languages and their checks. Pure.
pub fn rows(
    languages: &[LanguageSpec],
    checks: &[LanguageCheck],
    versions: &std::collections::BTreeMap<String, String>,
) -> Vec<Row> {
    languages
        .iter()
        .map(|l| {
            let c = checks.iter().find(|c| c.language == l.name);
            Row {
                language: l.name.clone(),
                aliases: l.aliases.clone(),
                version: versions
                    .get(&l.name)
                    .cloned()
                    .or_else(|| l.version.clone())
                    .unwrap_or_else(|| "-".into()),
                compile_ms: c.and_then(|c| c.compile_ms),
                run_ms: c.map(|c| c.run_ms).unwrap_or(0),
                passed: c.is_some_and(|c| c.passed),
                error: c.and_then(|c| c.error.clone()),
            }
        })
        .collect()
}

/// Renders the table. Pure.
pub fn render(rows: &[Row], format: Format) -> String {
    let ms = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
    let mut out = String::new();
    match format {
        Format::Text => {
            out.push_str(&format!(
                "{:<18} {:<28} {:>10} {:>7}  {}\n",
                "LANGUAGE", "VERSION", "COMPILE_MS", "RUN_MS", "PASS"
            ));
            for r in rows {
                let version: String = r.version.chars().take(28).collect();
                let pass = if r.passed {
                    "pass".to_string()
                } else {
                    format!("FAIL {}", r.error.as_deref().unwrap_or(""))
                };
                out.push_str(&format!(
                    "{:<18} {:<28} {:>10} {:>7}  {}\n",
                    r.language,
                    version,
                    ms(r.compile_ms),
                    r.run_ms,
                    pass
                ));
            }
        }
        Format::Markdown => {
            out.push_str("| language | aliases | version | compile ms | run ms | smoke tests |\n");
            out.push_str("|---|---|---|---:|---:|---|\n");
            for r in rows {
                let aliases = r
                    .aliases
                    .iter()
                    .map(|a| format!("`{a}`"))
                    .collect::<Vec<_>>()
                    .join(" ");
                let pass = if r.passed { "pass" } else { "**fail**" };
                out.push_str(&format!(
                    "| `{}` | {} | {} | {} | {} | {} |\n",
                    r.language,
                    aliases,
                    r.version.replace('|', "\\|"),
                    ms(r.compile_ms),
                    r.run_ms,
                    pass
                ));
            }
        }
    }
    let passed = rows.iter().filter(|r| r.passed).count();
    if format == Format::Text {
        out.push_str(&format!("{passed}/{} languages passed\n", rows.len()));
    }
    out
}

pub async fn run(args: SmokeArgs) -> anyhow::Result<()> {
    let (res, _) = crate::standalone::files::load(&args.config)?;
    let node = args.lxd.node();
    let lxd = args.lxd.client("unsandbox-smoke");
    lxd.ensure_project().await?;
    let images_dir = (args.images_dir != "none").then(|| PathBuf::from(&args.images_dir));
    let pools: Vec<_> = desired::resolve(&res, &node)
        .into_iter()
        .filter(|p| {
            args.pool
                .as_deref()
                .is_none_or(|want| p.key == want || p.name == want)
        })
        .collect();
    anyhow::ensure!(!pools.is_empty(), "no pool to test in {:?}", args.config);
    let mut all_passed = true;
    for pool in pools {
        let Some(spec_image) = pool.image.as_ref().filter(|_| pool.servable()) else {
            let why = pool.problem.map(|p| p.message).unwrap_or_default();
            anyhow::bail!("pool {} cannot be served: {why}", pool.key);
        };
        let fingerprint = image::ensure(&lxd, &spec_image.source, images_dir.as_deref())
            .await
            .with_context(|| format!("image of pool {}", pool.key))?;
        let versions = image::recorded_versions(&lxd, &fingerprint).await?;
        let hash = container_hash(&pool.spec, &fingerprint);
        let name = keys::container_name(&pool.name);
        let at = Placement {
            node: &node,
            pool_key: &pool.key,
            storage_pool: &args.storage_pool,
            fingerprint: &fingerprint,
            hash: &hash,
            egress_socket: None,
        };
        let languages = &spec_image.languages;
        eprintln!(
            "pool {}: {} languages, image {}",
            pool.key,
            languages.len(),
            &fingerprint[..12]
        );
        let start = Instant::now();
        // Proving needs no network, whatever the pool's tier.
        let ready =
            crate::execution::ready_command(languages, crate::crd::NetworkTier::Zerotrust, false);
        launcher::launch(&lxd, &name, None, &pool.spec, &at, ready)
            .await
            .context("starting the smoke-test container")?;
        let launched = start.elapsed();
        let checks =
            smoke::run_suite(&lxd, &name, languages, &smoke::limits(&pool.spec), false).await;
        let tested = start.elapsed() - launched;
        lxd.destroy(&name).await?;
        let rows = rows(languages, &checks, &versions);
        all_passed &= rows.iter().all(|r| r.passed);
        print!("{}", render(&rows, args.format));
        eprintln!(
            "container launched in {:.1} s; tests took {:.1} s",
            launched.as_secs_f64(),
            tested.as_secs_f64()
        );
    }
    lxd.delete_project().await.ok();
    anyhow::ensure!(all_passed, "some languages failed their smoke tests");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_rows_take_versions_from_the_image() {
        let langs: Vec<LanguageSpec> = serde_yaml::from_str(
            "[{name: c, aliases: [gcc], sourceFile: main.c, compile: cc main.c, run: ./a.out}, {name: lua, sourceFile: m.lua, run: lua m.lua}]",
        )
        .unwrap();
        let checks = vec![
            LanguageCheck {
                language: "c".into(),
                passed: true,
                error: None,
                compile_ms: Some(120),
                run_ms: 3,
            },
            LanguageCheck {
                language: "lua".into(),
                passed: false,
                error: Some("hello: printed \"\"".into()),
                compile_ms: None,
                run_ms: 4,
            },
        ];
        let versions = [("c".to_string(), "12.2.0".to_string())].into();
        let rows = rows(&langs, &checks, &versions);
        assert_eq!(rows[0].version, "12.2.0");
        assert_eq!(rows[1].version, "-");
        let text = render(&rows, Format::Text);
        assert!(text.contains("c                  12.2.0"), "{text}");
        assert!(text.contains("FAIL hello: printed"), "{text}");
        assert!(text.ends_with("1/2 languages passed\n"), "{text}");
        let md = render(&rows, Format::Markdown);
        assert!(
            md.contains("| `c` | `gcc` | 12.2.0 | 120 | 3 | pass |"),
            "{md}"
        );
        assert!(md.contains("| `lua` |  | - | - | 4 | **fail** |"), "{md}");
    }
}
