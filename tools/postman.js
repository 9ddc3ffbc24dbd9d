// Generates postman/ from openapi.yaml (make postman): a collection that runs
// end to end with newman, and a local environment for it.
//
//   node postman.js [OUTDIR]     (default ../postman; make postman-check
//                                 writes to a temporary folder and diffs)
//
// The collection is a scenario, not a catalogue: folders run in order and
// each request's test script checks the answer and hands ids to the next
// (pm.collectionVariables). Everything the contract knows comes from
// openapi.yaml: methods, paths, names and descriptions, the request bodies
// (the media type's `examples`), and the status codes and media types the
// tests expect, which must be ones the contract lists for the operation, so
// a contract change that breaks the scenario fails here. The scenario's
// knobs are in postman-options.json.
//
// The output is the same on every run (no ids, no clock): the committed
// files change only when the contract or this generator does. Times the
// requests need (scheduledAt) are computed by their pre-request scripts.
'use strict';

const fs = require('fs');
const path = require('path');
const YAML = require('yaml');

const root = path.resolve(__dirname, '..');
const outDir = path.resolve(process.argv[2] || path.join(root, 'postman'));
const options = JSON.parse(fs.readFileSync(path.join(__dirname, 'postman-options.json'), 'utf8'));
const spec = YAML.parse(fs.readFileSync(path.join(root, 'openapi.yaml'), 'utf8'));

function fail(message) {
  console.error('postman.js: ' + message);
  process.exit(1);
}

// ---- reading the contract ----

function deref(node) {
  while (node && typeof node.$ref === 'string') {
    if (!node.$ref.startsWith('#/')) {
      fail('only local $refs are supported: ' + node.$ref);
    }
    node = node.$ref
      .slice(2)
      .split('/')
      .reduce((at, key) => (at ? at[key.replace(/~1/g, '/').replace(/~0/g, '~')] : undefined), spec);
    if (!node) {
      fail('unresolved $ref');
    }
  }
  return node;
}

const methods = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'];

// operation finds an operation by operationId.
function operation(operationId) {
  for (const [route, item] of Object.entries(spec.paths)) {
    for (const method of methods) {
      if (item[method] && item[method].operationId === operationId) {
        return { route, method: method.toUpperCase(), op: item[method], item };
      }
    }
  }
  return fail('openapi.yaml has no operation ' + operationId);
}

// requestExample is a deep copy of the value of a request body example of
// mediaType (application/json unless given).
function requestExample(operationId, name, mediaType = 'application/json') {
  const { op } = operation(operationId);
  const media = op.requestBody && deref(op.requestBody).content[mediaType];
  const example = media && media.examples && media.examples[name];
  if (!example) {
    fail(`${operationId} has no ${mediaType} request body example ${name}`);
  }
  return JSON.parse(JSON.stringify(deref(example).value));
}

// response is what the contract says an operation answers with code: its
// description and its one media type.
function response(operationId, code) {
  const { op } = operation(operationId);
  const r = op.responses[String(code)];
  if (!r) {
    fail(`openapi.yaml lists no ${code} answer for ${operationId}; the scenario expects one`);
  }
  const answer = deref(r);
  const types = Object.keys(answer.content || {});
  if (types.length !== 1) {
    fail(`${operationId} ${code}: expected one media type, found ${types.join(', ') || 'none'}`);
  }
  return { description: answer.description.trim(), mediaType: types[0] };
}

function pathParameter(operationId, name) {
  const { op, item } = operation(operationId);
  const p = [...(item.parameters || []), ...(op.parameters || [])]
    .map(deref)
    .find((x) => x.in === 'path' && x.name === name);
  if (!p) {
    fail(`${operationId} has no path parameter ${name}`);
  }
  return p;
}

function tagDescription(name) {
  const tag = (spec.tags || []).find((t) => t.name === name);
  if (!tag) {
    fail('openapi.yaml has no tag ' + name);
  }
  return tag.description;
}

// ---- writing scripts ----

// lines turns a template into Postman's exec array: the common indentation
// and the blank first and last lines go.
function lines(text) {
  const all = text.replace(/^\n/, '').replace(/\n\s*$/, '').split('\n');
  const indent = Math.min(...all.filter((l) => l.trim()).map((l) => l.match(/^ */)[0].length));
  return all.map((l) => l.slice(indent));
}

// q quotes a string for a script, in single quotes like the scripts' own.
const q = (value) => "'" + String(value).replace(/\\/g, '\\\\').replace(/'/g, "\\'") + "'";

function expectStatus(code) {
  return `
    pm.test('status is ${code}', () => {
      pm.response.to.have.status(${code});
    });`;
}

function expectMediaType(mediaType) {
  return `
    pm.test('Content-Type is ${mediaType}', () => {
      const type = (pm.response.headers.get('Content-Type') || '').split(';')[0].trim();
      pm.expect(type).to.eql(${q(mediaType)});
    });`;
}

// expectAnswer checks the status code and media type the contract gives the
// operation's answer, and parses the body.
function expectAnswer(operationId, code) {
  const { mediaType } = response(operationId, code);
  return [expectStatus(code), expectMediaType(mediaType), 'const body = pm.response.json();'];
}

function expectProblem(operationId, code, type) {
  return [
    ...expectAnswer(operationId, code),
    `
    pm.test('the problem is ${type}', () => {
      pm.expect(body.type).to.eql(${q(type)});
      pm.expect(body.status).to.eql(${code});
      pm.expect(body.title).to.be.a('string').and.not.empty;
      pm.expect(body.detail).to.be.a('string').and.not.empty;
    });`,
  ];
}

const uuidPattern = '/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/';

// ---- building requests ----

function url(operationId, values = {}) {
  const { route } = operation(operationId);
  const segments = route.replace(/^\//, '').split('/');
  const variable = [];
  const pathSegments = segments.map((segment) => {
    const m = segment.match(/^\{(.+)\}$/);
    if (!m) {
      return segment;
    }
    if (!(m[1] in values)) {
      fail(`${operationId}: no value for path parameter ${m[1]}`);
    }
    variable.push({ key: m[1], value: values[m[1]], description: pathParameter(operationId, m[1]).description });
    return ':' + m[1];
  });
  return {
    raw: '{{baseUrl}}/' + pathSegments.join('/'),
    host: ['{{baseUrl}}'],
    path: pathSegments,
    variable,
  };
}

// script is an event whose exec is the parts (one text or several), each
// dedented on its own.
function script(listen, parts) {
  return { listen, script: { type: 'text/javascript', exec: [].concat(parts).flat().flatMap(lines) } };
}

// request is one item: operationId's method and path, a JSON body when
// given (as contentType, application/json unless given), and its test
// script (pre-request script and auth when given).
function request({ name, operationId, params, body, contentType = 'application/json', checks, prerequest, test, auth }) {
  const { method, op } = operation(operationId);
  const header = [];
  const req = {
    method,
    header,
    url: url(operationId, params),
    description: [op.summary + '.', op.description ? op.description.trim() : '', 'Checks: ' + checks]
      .filter(Boolean)
      .join('\n\n'),
  };
  if (body !== undefined) {
    header.push({ key: 'Content-Type', value: contentType });
    req.body = { mode: 'raw', raw: JSON.stringify(body, null, 2), options: { raw: { language: 'json' } } };
  }
  if (auth) {
    req.auth = auth;
  }
  const event = [];
  if (prerequest) {
    event.push(script('prerequest', prerequest));
  }
  event.push(script('test', test));
  return { name, event, request: req };
}

function folder(name, description, item) {
  return { name, description, item };
}

// ---- the scenario ----

const createExample = requestExample('createNotification', options.examples.createNotification);
const batchExample = requestExample('createBatch', options.examples.createBatch);
const operationExample = requestExample('createOperation', options.examples.createOperation);
const scheduleAhead = options.scheduleAheadSeconds;

// The created notification waits for scheduledAt, so it is still undelivered
// when it is cancelled, however fast the provider is.
const scheduled = { ...createExample, scheduledAt: '{{scheduledAt}}' };
delete scheduled.idempotencyKey; // a key would replay the first run's notification on the next

// The notifications the scenario itself creates that a recipient-only dry
// run filter matches: the least `matched` can be.
const created = [createExample, ...batchExample.notifications];
const filterKeys = Object.keys(operationExample.filter);
const leastMatched =
  filterKeys.length === 1 && filterKeys[0] === 'recipient'
    ? created.filter((n) => n.recipient === operationExample.filter.recipient).length
    : 0;

const invalid = { ...createExample, recipient: options.invalidRecipient };
delete invalid.idempotencyKey;
if (invalid.channel !== 'sms') {
  fail('the invalid-recipient request needs an sms example (an E.164 recipient)');
}

const notifications = folder('notifications', tagDescription('notifications'), [
  request({
    name: `Accept one notification (${createExample.channel}, scheduled ${scheduleAhead} s ahead)`,
    operationId: 'createNotification',
    params: {},
    body: scheduled,
    checks: `202, the notification as sent (\`id\`, \`status\` ACCEPTED, \`channel\`), its Location; saves \`notificationId\`. It is scheduled ${scheduleAhead} s ahead so the cancel below finds it undelivered.`,
    prerequest: `
      // Deliver no earlier than ${scheduleAhead} s from now: the cancel below finds it undelivered.
      pm.collectionVariables.set('scheduledAt', new Date(Date.now() + ${scheduleAhead * 1000}).toISOString());`,
    test: [
      ...expectAnswer('createNotification', 202),
      `
      const sent = JSON.parse(pm.variables.replaceIn(pm.request.body.raw));
      pm.test('the notification has an id and is ACCEPTED', () => {
        pm.expect(body.id).to.match(${uuidPattern});
        pm.expect(body.status).to.eql('ACCEPTED');
      });
      pm.test('the notification is the one sent', () => {
        pm.expect(body.channel).to.eql(sent.channel);
        pm.expect(body.recipient).to.eql(sent.recipient);
        pm.expect(body.content).to.eql(sent.content);
        pm.expect(body.priority).to.eql(sent.priority || 'NORMAL');
        pm.expect(Date.parse(body.scheduledAt)).to.eql(Date.parse(sent.scheduledAt));
        pm.expect(body.retries).to.eql(0);
      });
      pm.test('Location names the notification', () => {
        pm.expect(pm.response.headers.get('Location')).to.eql('/v1/notifications/' + body.id);
      });
      pm.collectionVariables.set('notificationId', body.id);
      pm.collectionVariables.set('channel', body.channel);`,
    ],
  }),
  request({
    name: 'Get one notification',
    operationId: 'getNotification',
    params: { id: '{{notificationId}}' },
    checks: '200, the same `id` and `channel`, not delivered yet (its `scheduledAt` is ahead).',
    test: [
      ...expectAnswer('getNotification', 200),
      `
      pm.test('it is the notification created', () => {
        pm.expect(body.id).to.eql(pm.collectionVariables.get('notificationId'));
        pm.expect(body.channel).to.eql(pm.collectionVariables.get('channel'));
        pm.expect(body.links.self).to.eql('/v1/notifications/' + body.id);
      });
      pm.test('it waits for its scheduledAt', () => {
        pm.expect(body.status).to.be.oneOf(['ACCEPTED', 'QUEUED', 'SCHEDULED']);
        pm.expect(body.attempts).to.eql(0);
      });`,
    ],
  }),
  request({
    name: 'The delivery attempts of one notification',
    operationId: 'listAttempts',
    params: { id: '{{notificationId}}' },
    checks: '200, `data` is an array, empty before the first attempt.',
    test: [
      ...expectAnswer('listAttempts', 200),
      `
      pm.test('data is an array, empty before scheduledAt', () => {
        pm.expect(body.data).to.be.an('array').that.is.empty;
      });`,
    ],
  }),
  request({
    name: 'Cancel a notification',
    operationId: 'cancelNotification',
    params: { id: '{{notificationId}}' },
    checks: '202 (the notification is undelivered), `cancelRequestedAt` set or `status` CANCELLED.',
    test: [
      ...expectAnswer('cancelNotification', 202),
      `
      pm.test('the cancel is recorded', () => {
        pm.expect(body.id).to.eql(pm.collectionVariables.get('notificationId'));
        pm.expect(body.status === 'CANCELLED' || typeof body.cancelRequestedAt === 'string',
          'status CANCELLED or cancelRequestedAt set, got ' + JSON.stringify(body)).to.be.true;
      });`,
    ],
  }),
  request({
    name: 'Retry a failed or cancelled notification',
    operationId: 'retryNotification',
    params: { id: '{{notificationId}}' },
    checks: `once the notification is CANCELLED (the pre-request script waits up to ${options.cancelledWithinMs / 1000} s for its workflow to act on the cancel): 202, ACCEPTED again, \`retries\` 1.`,
    prerequest: `
      // The cancel is recorded; the notification becomes CANCELLED once its
      // workflow acts on the signal. Wait for that (a retry is for a FAILED or
      // CANCELLED notification only).
      const deadline = Date.now() + ${options.cancelledWithinMs};
      const poll = () => {
        pm.sendRequest({
          url: pm.variables.replaceIn('{{baseUrl}}/v1/notifications/{{notificationId}}'),
          method: 'GET',
          header: [{ key: 'Authorization', value: 'Bearer ' + pm.variables.replaceIn('{{bearerToken}}') }],
        }, (err, res) => {
          const status = err ? String(err) : res.code === 200 ? res.json().status : 'HTTP ' + res.code;
          pm.variables.set('statusBeforeRetry', status);
          if (status !== 'CANCELLED' && Date.now() < deadline) {
            setTimeout(poll, 200);
          }
        });
      };
      poll();`,
    test: [
      `
      pm.test('the notification was CANCELLED before the retry', () => {
        pm.expect(pm.variables.get('statusBeforeRetry')).to.eql('CANCELLED');
      });`,
      ...expectAnswer('retryNotification', 202),
      `
      pm.test('it is accepted again, retried once', () => {
        pm.expect(body.id).to.eql(pm.collectionVariables.get('notificationId'));
        pm.expect(body.status).to.eql('ACCEPTED');
        pm.expect(body.retries).to.eql(1);
      });`,
    ],
  }),
]);

const batches = folder('batches', tagDescription('batches'), [
  request({
    name: `Accept 1 to 1,000 notifications at once (${batchExample.notifications.length})`,
    operationId: 'createBatch',
    params: {},
    body: batchExample,
    checks: '202, `count` is the number sent, every notification is in the batch; saves `batchId` and `batchCount`.',
    test: [
      ...expectAnswer('createBatch', 202),
      `
      const sent = JSON.parse(pm.request.body.raw).notifications;
      pm.test('count is the number of notifications sent', () => {
        pm.expect(body.batchId).to.match(${uuidPattern});
        pm.expect(body.count).to.eql(sent.length);
        pm.expect(body.notifications).to.be.an('array').with.lengthOf(sent.length);
      });
      pm.test('the notifications are the ones sent, in order, in the batch', () => {
        body.notifications.forEach((n, i) => {
          pm.expect(n.channel).to.eql(sent[i].channel);
          pm.expect(n.recipient).to.eql(sent[i].recipient);
          pm.expect(n.batchId).to.eql(body.batchId);
        });
      });
      pm.test('Location names the batch', () => {
        pm.expect(pm.response.headers.get('Location')).to.eql('/v1/batches/' + body.batchId);
      });
      pm.collectionVariables.set('batchId', body.batchId);
      pm.collectionVariables.set('batchCount', String(body.count));`,
    ],
  }),
  request({
    name: 'Progress of a batch',
    operationId: 'getBatch',
    params: { batchId: '{{batchId}}' },
    checks: '200, the same `batchId`, `total` equals the `count` accepted, the counts by status and by channel add up to it.',
    test: [
      ...expectAnswer('getBatch', 200),
      `
      const count = Number(pm.collectionVariables.get('batchCount'));
      const sum = (counts) => Object.values(counts).reduce((a, b) => a + b, 0);
      pm.test('total equals the count accepted', () => {
        pm.expect(body.batchId).to.eql(pm.collectionVariables.get('batchId'));
        pm.expect(body.total).to.eql(count);
      });
      pm.test('the counts by status and by channel add up to total', () => {
        pm.expect(sum(body.byStatus)).to.eql(body.total);
        pm.expect(sum(body.byChannel)).to.eql(body.total);
      });`,
    ],
  }),
]);

const operations = folder('operations', tagDescription('bulk'), [
  request({
    name: `Retry, cancel or erase the notifications a filter matches (${operationExample.action}, dry run)`,
    operationId: 'createOperation',
    params: {},
    body: operationExample,
    checks: `200, a dry run: \`matched\` is a number${leastMatched ? ` (at least the ${leastMatched} notifications this collection created for that recipient)` : ''}; nothing changes.`,
    test: [
      ...expectAnswer('createOperation', 200),
      `
      const sent = JSON.parse(pm.request.body.raw);
      pm.test('a dry run: matched is a number', () => {
        pm.expect(body.dryRun).to.eql(true);
        pm.expect(body.action).to.eql(sent.action);
        pm.expect(body.matched).to.be.a('number');
        pm.expect(Number.isInteger(body.matched)).to.be.true;
        pm.expect(body.matched).to.be.at.least(${leastMatched});
      });
      pm.test('no operation was stored', () => {
        pm.expect(body).to.not.have.property('id');
        pm.expect(pm.response.headers.has('Location')).to.be.false;
      });`,
    ],
  }),
]);

// The recipient side: a profile put, patched, read and erased, a category,
// and a suppression added, found and lifted. Its ids and address are the
// scenario's own (a rerun replaces them: 200 where the first run had 201),
// and the suppressed number is not the notifications' recipient.
const profileId = options.recipientId;
const suppressed = options.suppressedNumber;
const putProfile = requestExample('putRecipient', options.examples.putRecipient);
const patchProfile = requestExample('patchRecipient', options.examples.patchRecipient, 'application/merge-patch+json');

// expectCreatedOrReplaced checks a PUT's answer: 201 the first time, 200 on
// a rerun, with its Location.
function expectCreatedOrReplaced(operationId, location) {
  const { mediaType } = response(operationId, 201);
  return [
    `
    pm.test('status is 201 (created) or 200 (replaced)', () => {
      pm.expect(pm.response.code).to.be.oneOf([200, 201]);
    });
    pm.test('Location names it', () => {
      pm.expect(pm.response.headers.get('Location')).to.eql(${q(location)});
    });`,
    expectMediaType(mediaType),
    'const body = pm.response.json();',
  ];
}

const recipients = folder('recipients', tagDescription('recipients'), [
  request({
    name: 'Create or replace a recipient profile',
    operationId: 'putRecipient',
    params: { recipientId: profileId },
    body: putProfile,
    checks: '201 (200 on a rerun), the profile as sent, its Location.',
    test: [
      ...expectCreatedOrReplaced('putRecipient', '/v1/recipients/' + profileId),
      `
      const sent = JSON.parse(pm.request.body.raw);
      pm.test('the profile is the one sent', () => {
        pm.expect(body.id).to.eql(${q(profileId)});
        pm.expect(body.addresses).to.eql(sent.addresses || {});
        pm.expect(body.preferences).to.eql(sent.preferences || {});
      });`,
    ],
  }),
  request({
    name: 'Change part of a recipient profile (a JSON merge patch)',
    operationId: 'patchRecipient',
    params: { recipientId: profileId },
    body: patchProfile,
    contentType: 'application/merge-patch+json',
    checks: '200, the members set to null are gone, the preferences merged, the addresses kept.',
    test: [
      ...expectAnswer('patchRecipient', 200),
      `
      const before = ${JSON.stringify(putProfile)};
      const patch = JSON.parse(pm.request.body.raw);
      pm.test('null removed its member, the rest stayed', () => {
        Object.keys(patch).filter((k) => patch[k] === null).forEach((k) => pm.expect(body).to.not.have.property(k));
        pm.expect(body.addresses).to.eql(patch.addresses || before.addresses || {});
      });`,
    ],
  }),
  request({
    name: 'Get a recipient profile',
    operationId: 'getRecipient',
    params: { recipientId: profileId },
    checks: '200, the profile.',
    test: [
      ...expectAnswer('getRecipient', 200),
      `
      pm.test('it is the profile', () => {
        pm.expect(body.id).to.eql(${q(profileId)});
      });`,
    ],
  }),
  request({
    name: 'Create or replace a category',
    operationId: 'putCategory',
    params: { name: options.categoryName },
    body: requestExample('putCategory', options.examples.putCategory),
    checks: '201 (200 on a rerun), the category as sent.',
    test: [
      ...expectCreatedOrReplaced('putCategory', '/v1/categories/' + options.categoryName),
      `
      const sent = JSON.parse(pm.request.body.raw);
      pm.test('the category is the one sent', () => {
        pm.expect(body.name).to.eql(${q(options.categoryName)});
        pm.expect(body.critical).to.eql(sent.critical === true);
      });`,
    ],
  }),
  request({
    name: 'Suppress an address',
    operationId: 'putSuppression',
    params: { channel: 'sms', recipient: encodeURIComponent(suppressed) },
    body: requestExample('putSuppression', options.examples.putSuppression),
    checks: '201 (200 on a rerun), the suppression with its reason.',
    test: [
      ...expectCreatedOrReplaced('putSuppression', '/v1/suppressions/sms/' + suppressed),
      `
      const sent = JSON.parse(pm.request.body.raw);
      pm.test('the address is suppressed for the reason sent', () => {
        pm.expect(body.channel).to.eql('sms');
        pm.expect(body.recipient).to.eql(${q(suppressed)});
        pm.expect(body.reason).to.eql(sent.reason || 'manual');
      });`,
    ],
  }),
  request({
    name: 'The suppression list, filtered to that address',
    operationId: 'listSuppressions',
    params: {},
    checks: '200, exactly the one suppression.',
    test: [
      ...expectAnswer('listSuppressions', 200),
      `
      pm.test('the list holds that address', () => {
        pm.expect(body.data.map((s) => s.recipient)).to.eql([${q(suppressed)}]);
      });`,
    ],
  }),
  request({
    name: 'Lift the suppression',
    operationId: 'deleteSuppression',
    params: { channel: 'sms', recipient: encodeURIComponent(suppressed) },
    checks: '204.',
    test: expectStatus(204),
  }),
  request({
    name: 'Erase the recipient profile',
    operationId: 'deleteRecipient',
    params: { recipientId: profileId },
    checks: '204.',
    test: expectStatus(204),
  }),
  request({
    name: '404: the erased profile',
    operationId: 'getRecipient',
    params: { recipientId: profileId },
    checks: `404 ${response('getRecipient', 404).mediaType}, type \`/problems/not-found\`.`,
    test: expectProblem('getRecipient', 404, '/problems/not-found'),
  }),
]);
// Templates: one put (a new version on a rerun), a preview in Turkish,
// deleted, then gone. Its name is the scenario's own.
const templateName = options.templateName;
const templates = folder('templates', tagDescription('templates'), [
  request({
    name: 'Create a template, or a new version of it',
    operationId: 'putTemplate',
    params: { name: templateName },
    body: requestExample('putTemplate', options.examples.putTemplate),
    checks: '201 (200 on a rerun: a new version), the template with its version, its Location.',
    test: [
      ...expectCreatedOrReplaced('putTemplate', '/v1/templates/' + templateName),
      `
      const sent = JSON.parse(pm.request.body.raw);
      pm.test('the template is the one sent, versioned', () => {
        pm.expect(body.name).to.eql(${q(templateName)});
        pm.expect(body.channel).to.eql(sent.channel);
        pm.expect(body.version).to.be.at.least(1);
      });`,
    ],
  }),
  request({
    name: 'Preview it rendered in a locale',
    operationId: 'renderTemplate',
    params: { name: templateName },
    body: requestExample('renderTemplate', options.examples.renderTemplate),
    checks: '200, the parts rendered in the locale asked for, after its fallback (tr-TR to tr).',
    test: [
      ...expectAnswer('renderTemplate', 200),
      `
      const sent = JSON.parse(pm.request.body.raw);
      pm.test('rendered in the fallback of the locale asked for, with the data', () => {
        pm.expect(sent.locale.startsWith(body.locale)).to.be.true;
        pm.expect(body.text).to.include(sent.data.name);
      });`,
    ],
  }),
  request({
    name: 'Delete the template',
    operationId: 'deleteTemplate',
    params: { name: templateName },
    checks: '204.',
    test: expectStatus(204),
  }),
  request({
    name: '404: the deleted template',
    operationId: 'getTemplate',
    params: { name: templateName },
    checks: `404 ${response('getTemplate', 404).mediaType}, type \`/problems/not-found\`.`,
    test: expectProblem('getTemplate', 404, '/problems/not-found'),
  }),
]);

// The list request filters on the suppressed address.
recipients.item[5].request.url.raw += '?channel=sms&recipient=' + encodeURIComponent(suppressed);
recipients.item[5].request.url.query = [
  { key: 'channel', value: 'sms' },
  { key: 'recipient', value: encodeURIComponent(suppressed) },
];

const errors = folder('errors', 'Each request gets the error it asks for, as an RFC 9457 problem.', [
  request({
    name: '422: an invalid notification',
    operationId: 'createNotification',
    params: {},
    body: invalid,
    checks: `422 ${response('createNotification', 422).mediaType}, type \`/problems/validation-error\`, \`errors\` names \`recipient\` (\`${options.invalidRecipient}\` is no E.164 number).`,
    test: [
      ...expectProblem('createNotification', 422, '/problems/validation-error'),
      `
      pm.test('errors names the recipient', () => {
        pm.expect(body.errors).to.be.an('array').that.is.not.empty;
        pm.expect(body.errors.map((e) => e.field)).to.include('recipient');
      });`,
    ],
  }),
  request({
    name: '404: an unknown notification',
    operationId: 'getNotification',
    params: { id: options.unknownNotificationId },
    checks: `404 ${response('getNotification', 404).mediaType}, type \`/problems/not-found\`.`,
    test: expectProblem('getNotification', 404, '/problems/not-found'),
  }),
  request({
    name: '401: no API key',
    operationId: 'getNotification',
    params: { id: '{{notificationId}}' },
    auth: { type: 'noauth' },
    checks: `401 ${response('getNotification', 401).mediaType} without an API key, type \`/problems/unauthorized\`, \`WWW-Authenticate: Bearer\`.`,
    test: [
      ...expectProblem('getNotification', 401, '/problems/unauthorized'),
      `
      pm.test('WWW-Authenticate asks for a bearer token', () => {
        pm.expect(pm.response.headers.get('WWW-Authenticate')).to.match(/^Bearer\\b/);
      });`,
    ],
  }),
  request({
    name: '401: an unknown API key',
    operationId: 'getNotification',
    params: { id: '{{notificationId}}' },
    auth: { type: 'bearer', bearer: [{ key: 'token', value: options.invalidApiKey, type: 'string' }] },
    checks: `401 ${response('getNotification', 401).mediaType} with a key the server does not know, type \`/problems/unauthorized\`.`,
    test: [
      ...expectProblem('getNotification', 401, '/problems/unauthorized'),
      `
      pm.test('WWW-Authenticate asks for a bearer token', () => {
        pm.expect(pm.response.headers.get('WWW-Authenticate')).to.match(/^Bearer\\b/);
      });`,
    ],
  }),
]);

const collection = {
  info: {
    name: spec.info.title,
    description: [
      `${spec.info.summary} Generated from openapi.yaml (version ${spec.info.version}) by \`make postman\`; do not edit by hand.`,
      'The folders run in order as one scenario: notifications (create, get, attempts, cancel, retry), batches, a dry-run operation, the recipient side (a profile put, patched, read and erased, a category, a suppression added, listed and lifted), then the errors (422, 404, 401). Test scripts check every answer, its Content-Type and the X-Request-Id it echoes, and hand `notificationId` and `batchId` on as collection variables.',
      'Set `bearerToken` (an API key; `make run` writes one to `.data/dev-api-key`) and `baseUrl` in the environment, then:\n\n    newman run postman/dispatch-engine.postman_collection.json -e postman/dispatch-engine.local.postman_environment.json --env-var bearerToken=$(cat .data/dev-api-key)',
    ].join('\n\n'),
    schema: 'https://schema.getpostman.com/json/collection/v2.1.0/collection.json',
  },
  auth: { type: 'bearer', bearer: [{ key: 'token', value: '{{bearerToken}}', type: 'string' }] },
  event: [
    script(
      'test',
      `
      // Every answer, error or not, carries the request's id.
      pm.test('X-Request-Id is set', () => {
        pm.expect(pm.response.headers.get('X-Request-Id')).to.be.a('string').and.not.empty;
      });`,
    ),
  ],
  variable: [
    { key: 'baseUrl', value: spec.servers[0].url, type: 'string' },
    { key: 'scheduledAt', value: '', type: 'string' },
    { key: 'notificationId', value: '', type: 'string' },
    { key: 'channel', value: '', type: 'string' },
    { key: 'batchId', value: '', type: 'string' },
    { key: 'batchCount', value: '', type: 'string' },
  ],
  item: [notifications, batches, operations, recipients, templates, errors],
};

// The environment holds only what a user sets: the captured ids are
// collection variables, which an environment value of the same name would
// shadow.
const environment = {
  name: options.environmentName,
  values: [
    { key: 'baseUrl', value: spec.servers[0].url, type: 'default', enabled: true },
    { key: 'bearerToken', value: '', type: 'secret', enabled: true },
  ],
  _postman_variable_scope: 'environment',
};

fs.mkdirSync(outDir, { recursive: true });
for (const [file, data] of [
  [options.collectionFile, collection],
  [options.environmentFile, environment],
]) {
  fs.writeFileSync(path.join(outDir, file), JSON.stringify(data, null, 2) + '\n');
}
console.log(`wrote ${options.collectionFile} and ${options.environmentFile} to ${path.relative(root, outDir) || '.'}`);
