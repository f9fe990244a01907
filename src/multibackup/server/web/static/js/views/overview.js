// #/ — every plan with its last result, the counts, destinations' health and recent runs.

import { get } from '../api.js';
import { badge, empty, formatBytes, h, pageHeader, section, table, timeEl } from '../ui.js';
import { destinationHealth, enc, planStatus, RUN_HEADERS_PLAN, runNow, runRow } from './common.js';

export async function overviewPage(ctx) {
  const load = async () => {
    const data = await get('/overview');
    if (!ctx.alive()) return;
    ctx.render(view(data, load));
    const busy = (data.plans || []).some((p) => p.running)
      || (data.recent_runs || []).some((r) => r.status === 'queued' || r.status === 'running');
    ctx.later(() => load().catch(() => {}), busy ? 3000 : 30000);
  };
  await load();
}

function view(data, reload) {
  const plans = data.plans || [];
  const counts = data.counts || {};
  const newPlan = h('a', { class: 'btn btn-primary', href: '#/plans/new', testid: 'new-plan' }, 'New plan');
  return [
    pageHeader('Overview', newPlan),
    h('ul', { class: 'stats', testid: 'counts', 'aria-label': 'Counts' },
      stat('Plans', counts.plans ?? plans.length, 'count-plans'),
      stat('Succeeded (24 h)', counts.ok_24h ?? 0, 'count-ok', 'ok'),
      stat('Failed (24 h)', counts.failed_24h ?? 0, 'count-failed', (counts.failed_24h || 0) > 0 ? 'bad' : null),
      stat('Running', counts.running ?? 0, 'count-running', (counts.running || 0) > 0 ? 'info' : null)),
    section('Plans', plans.length ? plansTable(plans, reload) : empty('No plans yet. ',
      h('a', { href: '#/destinations/new' }, 'Add a destination'), ', then ',
      h('a', { href: '#/plans/new' }, 'create a plan'), '.')),
    h('div', { class: 'grid-wide' },
      section('Recent runs', (data.recent_runs || []).length
        ? table(RUN_HEADERS_PLAN, data.recent_runs.slice(0, 10).map((r) => runRow(r)), { testid: 'recent-runs' })
        : empty('No runs yet.')),
      section('Destinations', (data.destinations || []).length
        ? h('ul', { class: 'health-list', testid: 'overview-destinations' }, data.destinations.map((d) => h('li', null,
          h('a', { href: '#/destinations' }, d.name), ' ', badge(destinationHealth(d)),
          h('span', { class: 'muted' }, ` ${formatBytes((d.health || {}).stored_bytes)}`))))
        : empty('No destinations yet. ', h('a', { href: '#/destinations/new' }, 'Add one'), '.'))),
  ];
}

function stat(label, value, testid, tone) {
  return h('li', { class: ['stat', tone ? `stat-${tone}` : null], testid },
    h('span', { class: 'stat-value' }, String(value)), h('span', { class: 'stat-label' }, label));
}

function plansTable(plans, reload) {
  const rows = plans.map((plan) => {
    const status = planStatus(plan);
    const btn = h('button', {
      type: 'button', class: 'btn btn-small', testid: 'run-now', 'data-key': `run-${plan.id}`,
      disabled: plan.running, 'aria-label': `Run ${plan.name} now`,
    }, plan.running ? 'Running…' : 'Run now');
    btn.addEventListener('click', async () => {
      btn.disabled = true;
      const run = await runNow(plan);
      if (run) reload().catch(() => {});
      else btn.disabled = false;
    });
    return h('tr', { testid: 'plan-row', 'data-plan-id': plan.id, 'data-plan-name': plan.name },
      h('th', { scope: 'row' }, h('a', { href: `#/plans/${enc(plan.id)}`, testid: 'plan-link' }, plan.name),
        plan.enabled === false ? h('span', { class: 'muted' }, ' (disabled)') : null),
      h('td', null, badge(status, { testid: 'plan-status' })),
      h('td', null, plan.last_run ? h('a', { href: `#/runs/${enc(plan.last_run.id)}` }, timeEl(plan.last_run.finished_at, 'running')) : h('span', { class: 'muted' }, 'never')),
      h('td', null, plan.next_run ? timeEl(plan.next_run) : h('span', { class: 'muted' }, plan.schedule ? '—' : 'manual')),
      h('td', { class: 'narrow-hide' }, (plan.destinations || []).join(', ')),
      h('td', { class: 'actions' }, btn));
  });
  return h('div', { class: 'table-wrap' }, h('table', { testid: 'plans' },
    h('thead', null, h('tr', null, ['Plan', 'Last result', 'Last run', 'Next run', ['Destinations', 'narrow-hide'], h('span', { class: 'sr-only' }, 'Actions')]
      .map((t) => (Array.isArray(t) ? h('th', { scope: 'col', class: t[1] }, t[0]) : h('th', { scope: 'col' }, t))))),
    h('tbody', null, rows)));
}
