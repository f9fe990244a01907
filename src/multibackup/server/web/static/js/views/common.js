// Pieces several pages share: plan status, run rows, "run now".

import { del, post } from '../api.js';
import { ACTIVE, actionButton, badge, formatBytes, formatDuration, h, timeEl, toast } from '../ui.js';

export const enc = encodeURIComponent;

export function planStatus(plan) {
  if (plan.running) return 'running';
  if (plan.last_run && plan.last_run.status) return plan.last_run.status;
  return 'never';
}

export function runLink(run) {
  return h('a', { href: `#/runs/${enc(run.id)}` }, `#${run.id}`);
}

export function runWhat(run) {
  if (run.kind === 'restore') return `Restore${run.plan ? ` · ${run.plan}` : ''}`;
  if (run.kind === 'migrate') return `Migration${run.migration ? ` · ${run.migration}` : ''}`;
  return run.plan || (run.plan_id ? `Plan ${run.plan_id}` : 'Backup');
}

/** One row of a runs table. `withPlan` adds the plan column. */
export function runRow(run, withPlan = true) {
  return h('tr', { testid: 'run-row', 'data-run-id': run.id, 'data-status': run.status },
    h('td', null, runLink(run)),
    withPlan ? h('td', null, run.plan_id && run.kind !== 'migrate'
      ? h('a', { href: `#/plans/${enc(run.plan_id)}` }, runWhat(run)) : runWhat(run)) : null,
    h('td', null, badge(run.status)),
    h('td', { class: 'narrow-hide' }, run.kind && run.kind !== 'backup' ? `${run.kind}, ${run.trigger || ''}` : run.trigger || '—'),
    h('td', null, timeEl(run.started_at || run.queued_at)),
    h('td', { class: 'num narrow-hide' }, ACTIVE.has(run.status) ? '—' : formatDuration(run.duration)),
    h('td', { class: 'num narrow-hide' }, run.bytes_added === null || run.bytes_added === undefined ? '—' : formatBytes(run.bytes_added)));
}

const NARROW = 'narrow-hide';
export const RUN_HEADERS_PLAN = ['Run', 'Plan', 'Status', ['Trigger', NARROW], 'Started', ['Duration', `num ${NARROW}`], ['Added', `num ${NARROW}`]];
export const RUN_HEADERS = ['Run', 'Status', ['Trigger', NARROW], 'Started', ['Duration', `num ${NARROW}`], ['Added', `num ${NARROW}`]];

/** POST /plans/{id}/run; tells the user with a link to the run. Returns the run or null. */
export async function runNow(plan) {
  try {
    const run = await post(`/plans/${enc(plan.id)}/run`);
    toast(`Run of ${plan.name} started. `, 'ok',
      h('a', { href: `#/runs/${enc(run.id)}`, testid: 'toast-run-link' }, 'View run'));
    return run;
  } catch (err) {
    toast(`${plan.name}: ${err.detail || err.message}`, 'error');
    return null;
  }
}

export function confirmDelete(what) {
  // eslint-disable-next-line no-alert
  return window.confirm(`Delete ${what}? This cannot be undone.`);
}

/**
 * A button that asks before deleting ``path`` (``what`` names it in the question), then
 * runs ``done`` (reload the list, or leave the page). A refusal is a toast naming ``name``;
 * ``announce``, if given, is the toast shown on success.
 */
export function deleteButton(what, path, name, done, {
  label = 'Delete', failed = 'deleted', announce = null, ...props
} = {}) {
  return actionButton(label, async () => {
    if (!confirmDelete(what)) return;
    try {
      await del(path);
      if (announce) toast(announce, 'ok');
      await done();
    } catch (err) {
      toast(`${name} was not ${failed}: ${err.detail}`, 'error');
    }
  }, { class: 'btn btn-small btn-danger', ...props });
}

export function destinationHealth(d) {
  const health = d.health || {};
  if (health.error) return 'error';
  if (health.lagging) return 'lagging';
  if (health.last_success) return 'healthy';
  return 'never';
}
