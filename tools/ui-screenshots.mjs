// The screenshots of docs/TEMPORAL_UI.md: headless Chromium (the system's,
// driven by playwright-core, which downloads no browser of its own) opens
// each notification's workflow in the Temporal Web UI, and the list of all
// of them, waits until what the picture is about has rendered, and writes
// PNGs into --out. scripts/ui-screenshots.sh makes the notifications and runs
// this:
//
//   node ui-screenshots.mjs --ui http://127.0.0.1:8233 --out ../docs/images \
//     delivered=<id> failover=<id> failed=<id> cancelled=<id> retried=<id>
//
// For each notification but retried: temporal-ui-<name>.png (the run's User
// Metadata tab: its status badge, summary, the summaries of its steps and its
// current details) and temporal-ui-<name>-history.png (its event history,
// compact, with the summaries); for the failed one also
// temporal-ui-failed-result.png (the top of its History tab: the failure the
// run ended with); then temporal-ui-list.png, every run of them with their
// notification status. CHROMIUM names the browser (default
// /usr/bin/chromium).
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { chromium } from 'playwright-core';

// What each workflow's pictures must show before they are taken: the run's
// status badge, the start of its current details, the summary of the step
// the picture is about, and for failed the failure it ended with. A page that never shows them fails the run
// rather than leaving a misleading picture. retried appears in the list
// only, with both its runs.
const shots = {
  delivered: { badge: 'Completed', details: 'DELIVERED', step: 'attempt 1 (fast path)' },
  failover: { badge: 'Completed', details: 'DELIVERED', step: 'attempt 2 after sms-primary' },
  failed: {
    badge: 'Failed',
    details: 'FAILED',
    step: 'mark FAILED (permanent) and dead-letter',
    result: 'notification failed (permanent) after 1 attempt(s): provider answered 400',
  },
  cancelled: { badge: 'Canceled', details: 'CANCELLED', step: 'mark CANCELLED' },
  retried: { runs: 2 },
};

// The list's columns: the run's status and workflow id, then the
// notification's own status, attempts and provider (search attributes),
// which fit in 1400 pixels only without the run id, type and times.
const columnsRemoved = ['Run ID', 'Type', 'Start', 'End'];
const columnsAdded = ['NotificationStatus', 'NotificationAttempts', 'NotificationProvider'];

const { values, positionals } = parseArgs({
  options: { ui: { type: 'string' }, out: { type: 'string' } },
  allowPositionals: true,
});
if (!values.ui || !values.out || positionals.length === 0) {
  throw new Error('usage: ui-screenshots.mjs --ui <Temporal UI URL> --out <dir> <name>=<notification id>...');
}
const ids = Object.fromEntries(positionals.map((arg) => arg.split('=', 2)));
for (const name of Object.keys(ids)) {
  if (!shots[name]) throw new Error(`unknown screenshot ${name}: one of ${Object.keys(shots).join(', ')}`);
}

const namespace = `${values.ui.replace(/\/$/, '')}/namespaces/default`;
mkdirSync(values.out, { recursive: true });

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
});
try {
  // 1400x900 keeps the text readable and each PNG small; the UI shows
  // times in UTC unless told otherwise.
  const context = await browser.newContext({ viewport: { width: 1400, height: 900 }, colorScheme: 'light' });
  const page = await context.newPage();
  page.setDefaultTimeout(30_000);

  for (const [name, id] of Object.entries(ids)) {
    const want = shots[name];
    if (!want.badge) continue;
    const workflow = `${namespace}/workflows/notification-${id}`;

    await page.goto(workflow);
    await header(page, id, want.badge);
    await page.getByRole('tab', { name: 'User Metadata' }).first().click();
    await page.getByText('Current Details').first().waitFor();
    // The UI renders summaries and details (Markdown) in iframes of their own.
    const details = page.locator(`iframe[src*="content=**${want.details}**"]`).contentFrame();
    await details.getByText(want.details, { exact: true }).waitFor();
    await page.getByText(want.step, { exact: true }).first().waitFor();
    await shoot(page, name);

    await page.goto(workflow);
    await header(page, id, want.badge);
    if (want.result) {
      await page.getByText(want.result).first().waitFor();
      await shoot(page, `${name}-result`);
    }
    await page.getByText('Compact', { exact: true }).first().click();
    const table = page.locator('table');
    await table.getByText(want.step, { exact: true }).first().waitFor();
    await page.getByText('Event History', { exact: true }).first().evaluate((el) => el.scrollIntoView({ block: 'start' }));
    await shoot(page, `${name}-history`);
  }

  // The list, narrowed to these notifications so the picture does not
  // depend on what else the namespace holds.
  const workflowIds = Object.values(ids).map((id) => `"notification-${id}"`);
  const runs = Object.keys(ids).reduce((n, name) => n + (shots[name].runs ?? 1), 0);
  await page.goto(`${namespace}/workflows?query=${encodeURIComponent(`WorkflowId IN (${workflowIds.join(', ')})`)}`);
  const rows = page.getByTestId('workflows-summary-configurable-table-row');
  await rows.nth(runs - 1).waitFor();
  await page.getByTestId('workflows-summary-table-configuration-button').click();
  for (const column of columnsRemoved) {
    await page.getByTestId(`orderable-list-item-${column}-remove-button`).click();
  }
  for (const column of columnsAdded) {
    await page.getByTestId(`orderable-list-item-${column}-add-button`).click();
  }
  await page.getByTestId('drawer-close-button').click();
  await page.getByRole('button', { name: 'Collapse saved views' }).click();
  await page.getByTestId(`workflows-summary-table-header-cell-${columnsAdded.at(-1)}`).waitFor();
  await rows.first().getByText(/^(DELIVERED|FAILED|CANCELLED)$/).first().waitFor();
  await shoot(page, 'list');
} finally {
  await browser.close();
}

// header waits for the workflow page of notification id with its status badge.
async function header(page, id, badge) {
  await page.getByText(`notification-${id}`).first().waitFor();
  await page.getByText(badge, { exact: true }).first().waitFor();
}

// shoot writes the page as it is now to temporal-ui-<name>.png.
async function shoot(page, name) {
  const path = join(values.out, `temporal-ui-${name}.png`);
  await page.screenshot({ path });
  console.log(`wrote ${path}`);
}
