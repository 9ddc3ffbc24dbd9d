// make lint-deploy: validates every object in the Kubernetes manifests
// against the Kubernetes OpenAPI schemas carried by the kubernetes-models
// package (required fields, types, formats and enums), offline. Unknown
// fields are caught by tools/deploylint's strict decode; the kustomization
// itself is built by kustomize there.
//
//   node k8s-schema.mjs FILE...
import { readFileSync } from "node:fs";
import { basename } from "node:path";
import { parseAllDocuments } from "yaml";

let failed = 0;
let checked = 0;
for (const file of process.argv.slice(2)) {
  for (const doc of parseAllDocuments(readFileSync(file, "utf8"))) {
    if (doc.errors.length > 0) {
      failed++;
      console.log(`FAIL  ${basename(file)}: ${doc.errors[0].message}`);
      continue;
    }
    const obj = doc.toJS();
    if (!obj) continue;
    const name = `${basename(file)}: ${obj.apiVersion} ${obj.kind}`;
    if (obj.kind === "Kustomization") continue; // built by kustomize in tools/deploylint
    const [group, version] = String(obj.apiVersion).includes("/") ? obj.apiVersion.split("/") : ["", obj.apiVersion];
    let model;
    try {
      model = await import(`kubernetes-models/${group ? group + "/" : ""}${version}/${obj.kind}`);
    } catch {
      failed++;
      console.log(`FAIL  ${name}: no schema for this kind and version`);
      continue;
    }
    try {
      new model[obj.kind](obj).validate();
      checked++;
      console.log(`ok    ${name} ${obj.metadata?.name ?? ""}`);
    } catch (err) {
      failed++;
      console.log(`FAIL  ${name}: ${err.message}`);
    }
  }
}
console.log(`${checked} objects valid against the Kubernetes schemas, ${failed} failed`);
process.exit(failed > 0 ? 1 : 0);
