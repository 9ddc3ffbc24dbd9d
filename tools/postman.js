// Generates postman/ from openapi.yaml with openapi-to-postmanv2 (make postman):
// the collection, and a local environment for it. The output is the same on
// every run, so the committed files change only when the contract does.
'use strict';

const fs = require('fs');
const path = require('path');

// The converter fakes example values with Math.random and stamps random ids
// on items: seed the one, drop the other.
let seed = 20240601;
Math.random = () => {
  seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0;
  return seed / 4294967296;
};
// Faked date-times count from now: stop the clock.
const RealDate = Date;
const epoch = RealDate.UTC(2026, 0, 2, 15, 4, 5);
global.Date = class extends RealDate {
  constructor(...args) {
    super(...(args.length ? args : [epoch]));
  }

  static now() {
    return epoch;
  }
};
const Converter = require('openapi-to-postmanv2');

const root = path.resolve(__dirname, '..');
const outDir = path.join(root, 'postman');
const options = JSON.parse(fs.readFileSync(path.join(__dirname, 'postman-options.json'), 'utf8'));
const spec = fs.readFileSync(path.join(root, 'openapi.yaml'), 'utf8');

function stripIds(node) {
  if (Array.isArray(node)) {
    node.forEach(stripIds);
  } else if (node && typeof node === 'object') {
    delete node.id;
    delete node._postman_id;
    Object.values(node).forEach(stripIds);
  }
}

// Path parameters come from environment variables, so one notification or
// batch id can be pasted once and used by every request.
const pathVariables = { id: '{{notificationId}}', batchId: '{{batchId}}' };

function usePathVariables(node) {
  if (Array.isArray(node)) {
    node.forEach(usePathVariables);
  } else if (node && typeof node === 'object') {
    if (node.url && Array.isArray(node.url.variable)) {
      for (const v of node.url.variable) {
        if (pathVariables[v.key]) {
          v.value = pathVariables[v.key];
        }
      }
    }
    Object.values(node).forEach(usePathVariables);
  }
}

Converter.convert({ type: 'string', data: spec }, options, (err, result) => {
  if (err || !result.result) {
    console.error('conversion failed:', err || result.reason);
    process.exit(1);
  }
  const collection = result.output[0].data;
  stripIds(collection);
  usePathVariables(collection);
  fs.mkdirSync(outDir, { recursive: true });
  fs.writeFileSync(path.join(outDir, 'dispatch-engine.postman_collection.json'), JSON.stringify(collection, null, 2) + '\n');

  // The collection authenticates with {{bearerToken}} (an API key; make run
  // prints one) against {{baseUrl}}.
  const environment = {
    name: 'Dispatch Engine (local)',
    values: [
      { key: 'baseUrl', value: 'http://127.0.0.1:8080', type: 'default', enabled: true },
      { key: 'bearerToken', value: '', type: 'secret', enabled: true },
      { key: 'notificationId', value: '', type: 'default', enabled: true },
      { key: 'batchId', value: '', type: 'default', enabled: true },
    ],
    _postman_variable_scope: 'environment',
  };
  fs.writeFileSync(path.join(outDir, 'dispatch-engine.local.postman_environment.json'), JSON.stringify(environment, null, 2) + '\n');
  console.log('wrote postman/dispatch-engine.postman_collection.json and postman/dispatch-engine.local.postman_environment.json');
});
