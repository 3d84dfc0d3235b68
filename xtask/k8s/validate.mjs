// Validate Kubernetes and Istio manifests against their published schemas (kubernetes-models,
// @kubernetes-models/istio): types, enums, required fields, formats. Reads one multi-document
// YAML file (e.g. `kustomize build` output); prints one JSON line per document
// ({"kind", "name", "status": "ok" | "invalid" | "no-schema", "errors"}) and exits 1 when any
// document is invalid. Kinds without a published schema are reported, not judged.
// Installed with its pinned packages by `cargo xtask setup`; run by agent/tests/manifests.rs.
import fs from 'node:fs';
import yaml from 'js-yaml';

const ISTIO_GROUPS = new Set([
  'extensions.istio.io', 'networking.istio.io', 'security.istio.io', 'telemetry.istio.io',
]);

/** The module holding the models of an apiVersion, or null when none is published. */
function modelModule(apiVersion) {
  const [group, version] = apiVersion.includes('/') ? apiVersion.split('/') : ['', apiVersion];
  if (ISTIO_GROUPS.has(group)) return `@kubernetes-models/istio/${group}/${version}`;
  if (group === '') return `kubernetes-models/${version}`;
  if (!group.includes('.') || group.endsWith('.k8s.io')) return `kubernetes-models/${group}/${version}`;
  return null;
}

async function check(doc) {
  const name = doc?.metadata?.name ?? null;
  const kind = doc?.kind ?? null;
  if (typeof doc?.apiVersion !== 'string' || typeof kind !== 'string') {
    return { kind, name, status: 'invalid', errors: ['apiVersion and kind must be strings'] };
  }
  const module = modelModule(doc.apiVersion);
  let Model = null;
  if (module) {
    try {
      Model = (await import(module))[kind] ?? null;
    } catch {
      Model = null;
    }
  }
  if (!Model) return { kind, name, apiVersion: doc.apiVersion, status: 'no-schema', errors: [] };
  if (kind === 'Secret' && doc.data && typeof doc.data === 'object') {
    // kustomize wraps long base64 values over lines; the API server's decoder (Go's
    // encoding/base64) ignores \r and \n, the schema's "byte" format does not.
    for (const [key, value] of Object.entries(doc.data)) {
      if (typeof value === 'string') doc.data[key] = value.replace(/[\r\n]/g, '');
    }
  }
  try {
    new Model(doc).validate();
    return { kind, name, status: 'ok', errors: [] };
  } catch (e) {
    return { kind, name, status: 'invalid', errors: [String(e.message ?? e)] };
  }
}

const file = process.argv[2];
if (!file) {
  console.error('usage: node validate.mjs FILE.yaml');
  process.exit(2);
}
let docs;
try {
  docs = yaml.loadAll(fs.readFileSync(file, 'utf8')).filter((d) => d !== null && d !== undefined);
} catch (e) {
  console.log(JSON.stringify({ kind: null, name: null, status: 'invalid', errors: [`not YAML: ${e.message}`] }));
  process.exit(1);
}
let failed = false;
for (const doc of docs) {
  const result = await check(doc);
  failed ||= result.status === 'invalid';
  console.log(JSON.stringify(result));
}
process.exit(failed ? 1 : 0);
