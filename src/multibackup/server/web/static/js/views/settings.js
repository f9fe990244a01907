// #/settings — the account, API tokens (shown once on creation) and signing out.

import { get, post } from '../api.js';
import { logout } from '../app.js';
import {
  actionButton, alertRegion, clear, dl, empty, errorBox, field, h, onSubmit, pageHeader, section,
  submitButton, table, timeEl, toast,
} from '../ui.js';
import { deleteButton, enc } from './common.js';

export async function settingsPage(ctx) {
  const tokens = await get('/tokens');
  if (!ctx.alive()) return;
  const me = ctx.me || {};
  const reload = () => settingsPage(ctx).catch((err) => toast(err.detail || String(err), 'error'));

  const created = h('div', { testid: 'new-token-box', 'aria-live': 'polite' });
  const region = alertRegion('form-alert');
  const form = h('form', { class: 'form form-inline', testid: 'token-form', novalidate: true },
    region,
    field({ label: 'Token name', name: 'name', required: true, testid: 'field-token-name', placeholder: 'ci-deploy' }),
    field({ label: 'Expires after (days)', name: 'expires_days', type: 'number', min: 1, value: 90, testid: 'field-expires',
      hint: 'Empty: never expires.' }),
    h('div', { class: 'form-actions' }, submitButton('Create token', { testid: 'create-token' })));
  onSubmit(form, region, async () => {
    const days = form.elements.expires_days.value.trim();
    const res = await post('/tokens', { name: form.elements.name.value.trim(), expires_days: days ? Number(days) : null });
    const input = h('input', { type: 'text', readonly: true, value: res.token, class: 'mono', id: 'new-token', testid: 'new-token', spellcheck: 'false' });
    const copy = h('button', { type: 'button', class: 'btn btn-small' }, 'Copy');
    copy.addEventListener('click', async () => {
      input.select();
      try {
        await navigator.clipboard.writeText(res.token);
        copy.textContent = 'Copied';
      } catch {
        document.execCommand('copy');
        copy.textContent = 'Copied';
      }
    });
    clear(created, h('div', { class: 'alert alert-ok' },
      h('p', null, h('strong', null, `Token ${res.name} created. `), 'Copy it now: it is shown only this once.'),
      h('label', { for: 'new-token' }, 'Token'),
      h('div', { class: 'copy-row' }, input, copy),
      h('p', { class: 'hint' }, 'Send it as the header Authorization: Bearer <token>.')));
    form.reset();
    input.focus();
    input.select();
    const list = await get('/tokens');
    clear(tokenList, tokenTable(list));
  });

  const tokenTable = (list) => (list.length
    ? table(['Name', 'Created', 'Expires', h('span', { class: 'sr-only' }, 'Actions')], list.map((t) => h('tr', { testid: 'token-row', 'data-name': t.name },
      h('th', { scope: 'row' }, t.name),
      h('td', null, timeEl(t.created_at)),
      h('td', null, t.expires_at ? timeEl(t.expires_at) : 'never'),
      h('td', { class: 'actions' }, deleteButton(`token ${t.name}`, `/tokens/${enc(t.id)}`, t.name, reload,
        { label: 'Revoke', failed: 'revoked', 'aria-label': `Revoke token ${t.name}` })))), { testid: 'tokens' })
    : empty('No API tokens.'));
  const tokenList = h('div', null, tokenTable(tokens));

  const users = me.role === 'admin' || me.superadmin ? await usersSection(ctx, reload) : null;
  if (!ctx.alive()) return;

  ctx.render(
    pageHeader('Settings'),
    h('div', { class: 'grid-2' },
      section('Account', dl([
        ['Email', me.email],
        ['Name', me.name],
        ['Role', me.role],
        ['Organisation', me.organisation ? me.organisation.name : ''],
      ]), h('div', { class: 'form-actions' }, actionButton('Sign out', () => logout(), { class: 'btn', testid: 'sign-out' }))),
      section('API tokens',
        h('p', { class: 'hint' }, 'Tokens let scripts and CI use the REST API without a password.'),
        created, tokenList, h('h3', null, 'New token'), form)),
    users,
  );
}

/** The organisation's users (admins only): list, add, remove. */
async function usersSection(ctx, reload) {
  let list;
  try {
    list = await get('/users');
  } catch (err) {
    return section('Users', errorBox(err));
  }
  const me = ctx.me || {};
  const region = alertRegion('user-form-alert');
  const form = h('form', { class: 'form', testid: 'user-form', novalidate: true },
    region,
    h('div', { class: 'row-2' },
      field({ label: 'Email', name: 'email', type: 'email', required: true, autocomplete: 'off', testid: 'field-user-email' }),
      field({ label: 'Name', name: 'name', autocomplete: 'off', testid: 'field-user-name' })),
    h('div', { class: 'row-2' },
      field({ label: 'Password', name: 'password', type: 'password', required: true, autocomplete: 'new-password', testid: 'field-user-password' }),
      field({ label: 'Role', name: 'role', type: 'select', value: 'member', testid: 'field-user-role',
        options: [['member', 'member — uses plans and runs'], ['admin', 'admin — also manages users and restores']] })),
    h('div', { class: 'form-actions' }, submitButton('Add user', { testid: 'add-user' })));
  onSubmit(form, region, async () => {
    const el = form.elements;
    const user = await post('/users', { email: el.email.value.trim(), name: el.name.value.trim(),
      password: el.password.value, role: el.role.value });
    toast(`User ${user.email} added.`, 'ok');
    await reload();
  });
  return section('Users',
    table(['Email', 'Name', 'Role', h('span', { class: 'sr-only' }, 'Actions')], list.map((u) => h('tr', { testid: 'user-row', 'data-email': u.email },
      h('th', { scope: 'row', class: 'wrap' }, u.email),
      h('td', null, u.name || '—'),
      h('td', null, u.superadmin ? `${u.role}, server administrator` : u.role),
      h('td', { class: 'actions' }, u.id === me.id ? h('span', { class: 'muted' }, 'you') : deleteButton(
        `user ${u.email}`, `/users/${enc(u.id)}`, u.email, reload,
        { label: 'Remove', failed: 'removed', 'aria-label': `Remove user ${u.email}` })))), { testid: 'users' }),
    h('h3', null, 'Add a user'), form);
}
