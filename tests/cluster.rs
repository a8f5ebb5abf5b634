//! Against a real Kubernetes cluster (skipped unless asked for): run with
//! `KUBECONFIG=... cargo test --test cluster -- --ignored`. They apply the
//! CRDs, run the controller in process, create a pool and read its status
//! and printer columns, then delete it and see the finalizer released.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, CustomResourceExt};

use unsandbox::controller::{Context, ControllerConfig, run_controllers};
use unsandbox::crd::{ExecutorPool, LanguageImage};

async fn client() -> Client {
    assert!(
        std::env::var_os("KUBECONFIG").is_some(),
        "set KUBECONFIG to a test cluster"
    );
    Client::try_default().await.expect("a reachable cluster")
}

async fn apply_crds(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let pp = PatchParams::apply("unsandbox-tests").force();
    for crd in [LanguageImage::crd(), ExecutorPool::crd()] {
        let name = crd.metadata.name.clone().unwrap();
        crds.patch(&name, &pp, &Patch::Apply(&crd))
            .await
            .expect("apply CRD");
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
}

async fn wait<F: Fn() -> Fut, Fut: Future<Output = bool>>(what: &str, f: F) {
    for _ in 0..60 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
#[ignore = "needs a Kubernetes cluster (KUBECONFIG)"]
async fn pool_status_printer_columns_and_finalizer_on_a_real_cluster() {
    let client = client().await;
    apply_crds(&client).await;
    let cfg = ControllerConfig {
        agent_selector: Default::default(),
        cleanup_grace: Duration::from_secs(30),
    };
    let mut registry = prometheus_client::registry::Registry::default();
    let ctx: Arc<Context> = Context::new(client.clone(), cfg, "cluster-test", &mut registry);
    let controller = tokio::spawn(run_controllers(ctx));

    let images: Api<LanguageImage> = Api::all(client.clone());
    let image: LanguageImage = serde_yaml::from_str(include_str!(
        "../manifests/samples/languageimage-small.yaml"
    ))
    .unwrap();
    let _ = images.create(&PostParams::default(), &image).await;
    let pools: Api<ExecutorPool> = Api::namespaced(client.clone(), "default");
    let mut pool: ExecutorPool =
        serde_yaml::from_str(include_str!("../manifests/samples/executorpool-small.yaml")).unwrap();
    pool.metadata.name = Some("cluster-test".into());
    pools
        .create(&PostParams::default(), &pool)
        .await
        .expect("create pool");

    let p = pools.clone();
    wait("the finalizer and a status", || {
        let p = p.clone();
        async move {
            let got = p.get("cluster-test").await.unwrap();
            got.finalizers()
                .contains(&"unsandbox.com/containers".to_string())
                && got
                    .status
                    .as_ref()
                    .is_some_and(|s| s.nodes_ready.is_some() && !s.conditions.is_empty())
        }
    })
    .await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = crds.get("executorpools.unsandbox.com").await.unwrap();
    let columns: Vec<String> = crd.spec.versions[0]
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| c.name.clone())
        .collect();
    assert!(
        columns.contains(&"Warm".to_string()) && columns.contains(&"Nodes".to_string()),
        "{columns:?}"
    );

    pools
        .delete("cluster-test", &DeleteParams::default())
        .await
        .unwrap();
    let p = pools.clone();
    wait("the pool to be gone (finalizer released)", || {
        let p = p.clone();
        async move { p.get_opt("cluster-test").await.unwrap().is_none() }
    })
    .await;
    controller.abort();
}

use kube::ResourceExt;
