// #/alerts — where failures (and optionally successes, a daily summary) are reported.

import { get, post, put } from '../api.js';
import {
  actionButton, alertRegion, badge, clear, empty, field, h, onSubmit, pageHeader, section,
  submitButton, timeEl, toast,
} from '../ui.js';
import { deleteButton, enc } from './common.js';

export async function alertsPage(ctx, editing = null) {
  const channels = await get('/alerts');
  if (!ctx.alive()) return;
  const reload = () => alertsPage(ctx).catch((err) => toast(err.detail || String(err), 'error'));
  const edit = (a) => alertsPage(ctx, a).catch((err) => toast(err.detail || String(err), 'error'));
  const e = editing || { on_failure: true };

  const items = channels.map((a) => {
    const result = h('span', { class: 'test-result', role: 'status', testid: 'alert-test-result' });
    const events = [a.on_failure ? 'failures' : null, a.on_success ? 'successes' : null, a.daily_summary ? 'daily summary' : null].filter(Boolean);
    return h('li', { class: 'card item-card', testid: 'alert-row', 'data-name': a.name },
      h('div', { class: 'item-head' }, h('h2', null, a.name)),
      h('p', { class: 'mono muted wrap' }, a.url || ''),
      h('p', null, events.length ? `Sends: ${events.join(', ')}` : 'Sends nothing (all events off).'),
      h('div', { class: 'item-actions' },
        actionButton('Send test', async () => {
          clear(result, 'Sending…');
          try {
            const res = await post(`/alerts/${enc(a.id)}/test`);
            clear(result, res.ok ? [badge('ok'), ' Sent'] : [badge('failed'), ` ${res.error || 'Not sent'}`]);
          } catch (err) {
            clear(result, badge('failed'), ` ${err.detail}`);
          }
        }, { class: 'btn btn-small', testid: 'alert-test', 'aria-label': `Send a test to ${a.name}` }),
        h('button', { type: 'button', class: 'btn btn-small', testid: 'alert-edit', 'aria-label': `Edit alert ${a.name}`, onclick: () => edit(a) }, 'Edit'),
        deleteButton(`alert ${a.name}`, `/alerts/${enc(a.id)}`, a.name, reload,
          { 'aria-label': `Delete alert ${a.name}` })),
      result,
      a.last_error ? h('p', { class: 'muted wrap' }, 'Last delivery failed: ', a.last_error) : null,
      a.last_sent_at ? h('p', { class: 'muted' }, 'Last sent ', timeEl(a.last_sent_at)) : null);
  });

  const region = alertRegion('form-alert');
  const form = h('form', { class: 'form', testid: 'alert-form', novalidate: true },
    region,
    field({ label: 'Name', name: 'name', value: e.name || '', required: true, testid: 'field-name' }),
    field({ label: 'Notification URL', name: 'url', required: !editing, testid: 'field-url', autocomplete: 'off',
      placeholder: editing ? e.url : 'mailtos://user:password@mail.example.com?to=ops@example.com',
      hint: editing ? 'Leave empty to keep the stored URL.'
        : 'An Apprise URL: mailto:// or mailtos:// for email, json:// or jsons:// for a webhook, slack://, tgram://, and many more. Stored encrypted.' }),
    h('fieldset', { class: 'group' }, h('legend', null, 'Send on'),
      field({ label: 'Failed or partial runs', name: 'on_failure', type: 'checkbox', value: e.on_failure, testid: 'field-on-failure' }),
      field({ label: 'Successful runs', name: 'on_success', type: 'checkbox', value: e.on_success, testid: 'field-on-success' }),
      field({ label: 'A daily summary', name: 'daily_summary', type: 'checkbox', value: e.daily_summary, testid: 'field-daily-summary' })),
    h('div', { class: 'form-actions' }, submitButton(editing ? 'Save changes' : 'Add alert', { testid: 'save' }),
      editing ? h('button', { type: 'button', class: 'btn btn-link', onclick: reload }, 'Cancel') : null));
  onSubmit(form, region, async () => {
    const el = form.elements;
    const body = {
      name: el.name.value.trim(), on_failure: el.on_failure.checked,
      on_success: el.on_success.checked, daily_summary: el.daily_summary.checked,
    };
    if (el.url.value.trim()) body.url = el.url.value.trim();
    const saved = editing ? await put(`/alerts/${enc(editing.id)}`, body) : await post('/alerts', body);
    toast(`Alert ${saved.name} saved.`, 'ok');
    await reload();
  });

  ctx.render(
    pageHeader('Alerts'),
    channels.length ? h('ul', { class: 'cards', testid: 'alert-list' }, items) : section('No alerts yet', empty('Nobody is told when a backup fails. Add an alert below.')),
    section(editing ? `Edit alert ${editing.name}` : 'Add an alert', form),
  );
  if (editing) form.elements.name.focus();
}
