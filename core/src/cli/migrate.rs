//! `derm migrate`: existing HPAs on a DermApp's scale targets -> HPAs on `derm_desired_replicas`
//! (the transformation is [`crate::migrate`]; this module reads, prints and writes).
//!
//! Sources: YAML/JSON files (`-f`, several documents and `kind: List` allowed) or the cluster
//! (`cluster` feature: kube client over rustls with ring). Shows a unified diff per HPA by
//! default; `-o yaml` prints the migrated HPAs (for a Git repository); `--apply` writes them.
//! A refusal for any HPA stops the whole run before anything is written.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use serde_json::Value;

use crate::migrate::{self, Options, Outcome};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Read HPAs (and DermApps) from these YAML or JSON files (`-` for stdin) instead of the
    /// cluster. DermApps missing from the files are read from the cluster.
    #[arg(short = 'f', long = "filename")]
    files: Vec<PathBuf>,
    /// Namespace to read from the cluster, and of file objects that name none.
    #[arg(short = 'n', long, env = "DERM_NAMESPACE", default_value = "default")]
    namespace: String,
    /// Read HPAs and DermApps of every namespace.
    #[arg(short = 'A', long, conflicts_with = "files")]
    all_namespaces: bool,
    /// Write the migrated HPAs to the cluster (replace with the version read, or create).
    #[arg(long)]
    apply: bool,
    /// `diff` (default) or `yaml` (the migrated HPAs, ready to commit).
    #[arg(short = 'o', long, default_value = "diff", value_parser = ["diff", "yaml"])]
    output: String,
    /// Replace a spec.behavior the HPA already has with the exact-landing recipe.
    #[arg(long)]
    replace_behavior: bool,
}

/// Objects to work on, and where they came from.
struct Input {
    apps: Vec<Value>,
    hpas: Vec<Value>,
    /// Read from the cluster (an unrelated HPA is skipped) or from files (it is refused).
    from_cluster: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let input = read_input(&args)?;
    let targets: Vec<migrate::Target> =
        input.apps.iter().map(migrate::targets).collect::<Result<Vec<_>, _>>()?.into_iter().flatten().collect();
    if targets.is_empty() {
        anyhow::bail!(
            "no DermApp found (namespace {:?}): create the DermApp first, or pass its YAML with -f",
            args.namespace
        );
    }
    let options = Options { replace_behavior: args.replace_behavior };
    let mut report = String::new();
    let (mut writes, mut refused) = (Vec::new(), 0usize);
    for hpa in &input.hpas {
        let who = migrate::describe(hpa);
        match migrate::migrate(hpa, &targets, options)? {
            Outcome::Migrate { before, after, notes } => {
                writeln!(report, "migrate {who}")?;
                for note in &notes {
                    writeln!(report, "  note: {note}")?;
                }
                if args.output == "diff" {
                    report.push_str(&diff(&who, &before, &after)?);
                }
                writes.push(after);
            }
            Outcome::Unchanged => writeln!(report, "unchanged {who}: already on Derm's metric with the recipe")?,
            Outcome::Unrelated if input.from_cluster => writeln!(report, "skip {who}: its target is in no DermApp")?,
            Outcome::Unrelated => {
                refused += 1;
                writeln!(
                    report,
                    "REFUSED {who}: its scale target is in no DermApp (add the service to a DermApp first)"
                )?;
            }
            Outcome::Refused(reason) => {
                refused += 1;
                writeln!(report, "REFUSED {who}: {reason}")?;
            }
        }
    }
    eprint!("{report}");
    if args.output == "yaml" {
        let shown: Vec<Value> = writes.iter().map(migrate::for_display).collect();
        print!("{}", serde_saphyr::to_string_multiple(&shown).context("cannot write YAML")?);
    }
    if refused > 0 {
        anyhow::bail!("{refused} HPA(s) refused; nothing was written");
    }
    eprintln!("{} HPA(s) to migrate out of {}", writes.len(), input.hpas.len());
    if args.apply {
        apply(&writes)?;
    } else if !writes.is_empty() {
        eprintln!("dry run: pass --apply to write them");
    }
    Ok(())
}

fn read_input(args: &Args) -> anyhow::Result<Input> {
    if args.files.is_empty() {
        let (apps, hpas) = cluster::read(&args.namespace, args.all_namespaces)?;
        return Ok(Input { apps, hpas, from_cluster: true });
    }
    let mut docs = Vec::new();
    for path in &args.files {
        let text = if path.as_os_str() == "-" {
            std::io::read_to_string(std::io::stdin()).context("cannot read stdin")?
        } else {
            std::fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?
        };
        let parsed: Vec<Value> =
            serde_saphyr::from_multiple(&text).map_err(|e| anyhow::anyhow!("{}: invalid YAML: {e}", path.display()))?;
        docs.extend(parsed);
    }
    let (mut apps, mut hpas, others) = migrate::sort_objects(docs);
    if !others.is_empty() {
        let list: Vec<String> = others.iter().map(|(kind, n)| format!("{n} {kind}")).collect();
        eprintln!("ignoring {} in the files", list.join(", "));
    }
    for obj in apps.iter_mut().chain(hpas.iter_mut()) {
        migrate::default_namespace(obj, &args.namespace);
    }
    if apps.is_empty() {
        apps = cluster::read(&args.namespace, false)?.0;
    }
    Ok(Input { apps, hpas, from_cluster: false })
}

/// A unified diff of the YAML of both objects, without server-managed fields.
fn diff(who: &str, before: &Value, after: &Value) -> anyhow::Result<String> {
    let a = serde_saphyr::to_string(&migrate::for_display(before)).context("cannot write YAML")?;
    let b = serde_saphyr::to_string(&migrate::for_display(after)).context("cannot write YAML")?;
    let text = similar::TextDiff::from_lines(&a, &b);
    Ok(text.unified_diff().context_radius(3).header(&format!("{who} (now)"), &format!("{who} (migrated)")).to_string())
}

fn apply(writes: &[Value]) -> anyhow::Result<()> {
    if writes.is_empty() {
        return Ok(());
    }
    cluster::write(writes)?;
    for hpa in writes {
        eprintln!("applied {}", migrate::describe(hpa));
    }
    Ok(())
}

#[cfg(feature = "cluster")]
mod cluster {
    //! Reads DermApps and HPAs, writes HPAs: kube's dynamic API, so objects stay JSON.

    use anyhow::Context as _;
    use kube::api::{Api, ApiResource, DynamicObject, ListParams, PostParams};
    use serde_json::Value;

    fn hpa_resource() -> ApiResource {
        ApiResource {
            group: "autoscaling".into(),
            version: "v2".into(),
            api_version: "autoscaling/v2".into(),
            kind: "HorizontalPodAutoscaler".into(),
            plural: "horizontalpodautoscalers".into(),
        }
    }

    fn dermapp_resource() -> ApiResource {
        ApiResource {
            group: "derm.dev".into(),
            version: "v1alpha1".into(),
            api_version: "derm.dev/v1alpha1".into(),
            kind: "DermApp".into(),
            plural: "dermapps".into(),
        }
    }

    fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
        // An error only means a provider is already installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("cannot start the async runtime")
    }

    async fn client() -> anyhow::Result<kube::Client> {
        kube::Client::try_default().await.context("cannot reach the cluster (KUBECONFIG or in-cluster config)")
    }

    fn api(client: &kube::Client, ar: &ApiResource, namespace: Option<&str>) -> Api<DynamicObject> {
        match namespace {
            Some(ns) => Api::namespaced_with(client.clone(), ns, ar),
            None => Api::all_with(client.clone(), ar),
        }
    }

    async fn list(client: &kube::Client, ar: &ApiResource, namespace: Option<&str>) -> anyhow::Result<Vec<Value>> {
        let objects = api(client, ar, namespace)
            .list(&ListParams::default())
            .await
            .with_context(|| format!("cannot list {}", ar.plural))?;
        // List items carry no apiVersion/kind on the wire; put them back for the transformation.
        objects
            .items
            .into_iter()
            .map(|o| {
                let mut v = serde_json::to_value(o)?;
                v["apiVersion"] = ar.api_version.clone().into();
                v["kind"] = ar.kind.clone().into();
                Ok(v)
            })
            .collect()
    }

    /// DermApps and HPAs of `namespace` (or of all namespaces).
    pub fn read(namespace: &str, all: bool) -> anyhow::Result<(Vec<Value>, Vec<Value>)> {
        let ns = (!all).then_some(namespace);
        runtime()?.block_on(async {
            let client = client().await?;
            let apps = list(&client, &dermapp_resource(), ns)
                .await
                .context("is the DermApp CRD installed? (kubectl apply --server-side -f manifests/crd-dermapp.yaml)")?;
            Ok((apps, list(&client, &hpa_resource(), ns).await?))
        })
    }

    /// Replaces each HPA (optimistic concurrency on the resourceVersion read), creating it when
    /// it does not exist; for objects from files, the live resourceVersion is used.
    pub fn write(hpas: &[Value]) -> anyhow::Result<()> {
        runtime()?.block_on(async {
            let client = client().await?;
            let ar = hpa_resource();
            for hpa in hpas {
                let who = crate::migrate::describe(hpa);
                let mut obj: DynamicObject = serde_json::from_value(hpa.clone()).with_context(|| who.clone())?;
                let ns = obj.metadata.namespace.clone().unwrap_or_else(|| "default".into());
                let name = obj.metadata.name.clone().unwrap_or_default();
                let api = api(&client, &ar, Some(&ns));
                match api.get_opt(&name).await.with_context(|| format!("cannot read {who}"))? {
                    None => {
                        obj.metadata.resource_version = None;
                        api.create(&PostParams::default(), &obj)
                            .await
                            .with_context(|| format!("cannot create {who}"))?;
                    }
                    Some(live) => {
                        if obj.metadata.resource_version.is_none() {
                            obj.metadata.resource_version = live.metadata.resource_version;
                        }
                        api.replace(&name, &PostParams::default(), &obj).await.with_context(|| {
                            format!("cannot replace {who} (changed since it was read? run derm migrate again)")
                        })?;
                    }
                }
            }
            Ok(())
        })
    }
}

#[cfg(not(feature = "cluster"))]
mod cluster {
    //! Built without the `cluster` feature: files only.

    use serde_json::Value;

    const WHY: &str = "derm was built without the `cluster` feature: pass the HPAs and DermApps with -f, and apply \
                       the output of `-o yaml` with kubectl";

    pub fn read(_namespace: &str, _all: bool) -> anyhow::Result<(Vec<Value>, Vec<Value>)> {
        anyhow::bail!(WHY)
    }

    pub fn write(_hpas: &[Value]) -> anyhow::Result<()> {
        anyhow::bail!(WHY)
    }
}
